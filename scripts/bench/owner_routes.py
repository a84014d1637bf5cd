"""``bench_routes.py --owned``: what routes cost when they ride in the federation export.

In this process, no I/O (the federation codec and sessions are pure): site ``bencha`` owns
100 services (10 endpoints each, plus ``web.default``) and, in the "with" case, the 1 000
routes of ``bench_routes``'s ``spread`` set on them.  Measured with and without the routes, in
the same run:

* the export: the snapshot's bytes and the CPU to build and encode it (attach the routes,
  :class:`~overlay.federation.export.ExportSession`, :func:`encode_message`), and the bytes of
  a delta after one route changed (the owner reloaded);
* the import at ``benchc``: the CPU to decode the frames, apply them to the import table, and
  (with routes) validate, choose and compile the 1 000 routes into the router's rules;
* per request: ``decide`` and a whole ``forward`` to a no-op, for a request matched by the
  imported route against the same route defined locally -- the same path, so the ratio
  should be ~1.
"""

from __future__ import annotations

import contextlib
import statistics
import time
from typing import Any

from bench_routes import CALLER, _cpu_us, _noop, route_set

from discovery.model import Endpoint, ServiceName
from gateway.http.exchange import CallContext, EmptyBody, Request
from gateway.routes.forward import Mirrors, RouteRules
from gateway.routes.imported import RouteDecoder, choose_routes, peer_routes
from gateway.routes.owned import owned_route_texts
from gateway.routes.table import RouteTable, compile_route
from overlay.federation.config import ExportConfig
from overlay.federation.export import ExportSession, compute_export
from overlay.federation.export_routes import RoutedView
from overlay.federation.import_ import ImportSession, ImportTable
from overlay.federation.protocol import Ack, FrameDecoder, encode_message

OWNER, ENTRY = "bencha", "benchc"


def _endpoints() -> list[Endpoint]:
    names = [ServiceName(f"svc{a}", "default") for a in range(100)] + [ServiceName("web")]
    return [Endpoint(n, f"10.0.{i}.{j}", 8080) for i, n in enumerate(names) for j in range(10)]


def _cpu_s(fn: Any, repeat: int = 5) -> tuple[float, Any]:
    """The least CPU seconds of ``repeat`` runs of ``fn`` (and its last result)."""
    best, out = float("inf"), None
    for _ in range(repeat):
        begin = time.process_time()
        out = fn()
        best = min(best, time.process_time() - begin)
    return best, out


def _export(texts: dict[ServiceName, tuple[str, ...]]) -> tuple[list[bytes], ExportSession]:
    view = compute_export(_endpoints(), [ExportConfig()], ENTRY)
    routed = RoutedView()
    routed.update(view, None, texts)
    session = ExportSession(OWNER, "bench")
    session.set_view(routed.view)
    frames = []
    while (msg := session.next_message(0.0)) is not None:
        frames.append(encode_message(msg))
    return frames, session


def _import(frames: list[bytes], with_routes: bool) -> tuple[ImportTable, RouteRules | None]:
    importer, table = ImportSession(OWNER), ImportTable(grace=10.0)
    decoder = FrameDecoder(routes=True)
    for frame in frames:
        for msg in decoder.feed(frame):
            result = importer.receive(msg)  # type: ignore[arg-type]
            if result.update is not None:
                table = table.apply(result.update, 0.0)
    if not with_routes:
        return table, None
    chosen = choose_routes(
        peer_routes(table), frozenset(), {}, RouteDecoder(ENTRY, [OWNER, "benchb"])
    )
    assert len(chosen) == 1000 and not chosen.rejected, chosen.rejected[:1]
    by_address = {
        key: tuple(compile_route(i, r, "isthmus") for i, r in enumerate(routes))
        for key, routes in chosen.routes.items()
    }
    table_ = RouteTable(by_address)
    return table, RouteRules(table_, mesh_domain="isthmus", mirrors=Mirrors(), clock=time.monotonic)


def measure(n: int) -> dict[str, dict[str, float]]:
    local = route_set("spread", site=OWNER)
    texts, dropped = owned_route_texts(local, OWNER)
    assert not dropped and sum(len(t) for t in texts.values()) == 1000
    out: dict[str, dict[str, float]] = {}
    for case, owned in (("without routes", {}), ("with 1000 routes", texts)):
        export_s, (frames, session) = _cpu_s(lambda owned=owned: _export(owned))
        import_s, _ = _cpu_s(lambda f=frames, o=owned: _import(f, bool(o)))
        fig = {
            "snapshot_bytes": float(sum(len(f) for f in frames)),
            "export_ms": export_s * 1e3,
            "import_ms": import_s * 1e3,
        }
        if owned:  # one route edited at the owner: the delta carries its service again
            changed = dict(owned)
            name = next(iter(changed))
            changed[name] = (changed[name][0].replace("routes[", "edited["), *changed[name][1:])
            routed = RoutedView()
            view = compute_export(_endpoints(), [ExportConfig()], ENTRY)
            routed.update(view, None, changed)
            session.receive(_ack(session))
            session.set_view(routed.view, {name})
            msg = session.next_message(1.0)
            fig["route_delta_bytes"] = float(len(encode_message(msg))) if msg else 0.0
        out[case] = fig
    out["per request"] = _per_request(local, n)
    return out


def _ack(session: ExportSession) -> Ack:
    return Ack(session.epoch, session.statistics().last_sent_version)


def _per_request(local: tuple[Any, ...], n: int) -> dict[str, float]:
    ctx = CallContext("benchc", CALLER, deadline=1e12)
    request = Request(
        b"GET",
        b"http",
        b"web.default.bencha.isthmus",
        b"/orders/12345?x=1",
        ((b"user-agent", b"wrk"), (b"accept", b"*/*"), (b"x-debug", b"1")),
    )
    local_rules = RouteRules.build(
        local, mesh_domain="isthmus", mirrors=Mirrors(), clock=time.monotonic
    )
    frames, _ = _export(owned_route_texts(local, OWNER)[0])
    _, imported_rules = _import(frames, True)
    assert imported_rules is not None
    samples: dict[str, list[float]] = {}
    # Alternated, five rounds, medians: the two cases see the same machine load.
    for _ in range(5):
        for case, rules in (("local", local_rules), ("imported", imported_rules)):
            route = rules.decide(request, ctx)
            assert route is not None and route.label.endswith("hit"), route

            def routed(rules: RouteRules = rules) -> None:
                coro = rules.forward(request, EmptyBody(), None, ctx, None, _noop)  # type: ignore[arg-type]
                with contextlib.suppress(StopIteration):
                    coro.send(None)

            decide_us = _cpu_us(lambda rules=rules: rules.decide(request, ctx), n // 5)
            samples.setdefault(f"{case}_decide_us", []).append(decide_us)
            samples.setdefault(f"{case}_forward_us", []).append(_cpu_us(routed, n // 5))
    fig = {name: statistics.median(values) for name, values in samples.items()}
    return fig


def report(n: int) -> None:
    figures = measure(n)
    print("owned routes: the export with and without 1000 routes (this process, no I/O)")
    base = figures["without routes"]
    for case in ("without routes", "with 1000 routes"):
        fig = figures[case]
        line = (
            f"  {case:18s} snapshot {fig['snapshot_bytes'] / 1024:8.1f} KiB"
            f"  export {fig['export_ms']:7.2f} ms  import {fig['import_ms']:7.2f} ms"
        )
        if case != "without routes":
            line += (
                f"  (x{fig['snapshot_bytes'] / base['snapshot_bytes']:.1f} bytes,"
                f" x{fig['export_ms'] / base['export_ms']:.1f} export,"
                f" x{fig['import_ms'] / base['import_ms']:.1f} import;"
                f" one route edited: a {fig['route_delta_bytes']:.0f}-byte delta)"
            )
        print(line, flush=True)
    r = figures["per request"]
    print(
        f"  per request (1000 routes): decide local {r['local_decide_us']:.2f} us,"
        f" imported {r['imported_decide_us']:.2f} us"
        f" (x{r['imported_decide_us'] / r['local_decide_us']:.2f});"
        f" decide + actions local {r['local_forward_us']:.2f} us,"
        f" imported {r['imported_forward_us']:.2f} us"
        f" (x{r['imported_forward_us'] / r['local_forward_us']:.2f})",
        flush=True,
    )
