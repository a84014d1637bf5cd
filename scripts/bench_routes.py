#!/usr/bin/env python3
"""Benchmark ``[[routes]]``: the route engine's CPU per request, and the data path with routes
against without, as same-run ratios.

Two parts:

1. **Engine** (in this process, no I/O): 1 000 routes compiled from configs, then the CPU per
   decision of :meth:`gateway.routes.forward.RouteRules.decide` (authority parsed, request
   view built, routes of the address walked) and of a whole routed ``forward`` to a no-op
   (decision + rate limit + weighted draw + header edits + path rewrite):

   * ``spread``: 100 addresses x 10 routes; the request's address has 10, the last matches;
   * ``1000 prefix``: 1 000 routes on one address, the request matches the last (999 missed);
   * ``1000 regex``: the same with a regular expression per route (the bounded engine),
     each with a literal start (``/r12/[a-z]+``: the path index skips it by a lookup);
   * ``1000 regex alt``: literal starts behind an alternation (``(?:/r12|/q12)/...``);
   * ``1000 open regex``: regexes without a literal start (``[^?]*/r12/...``): each is run,
     the worst case;
   * ``no route``: an address without routes (what every other request pays).

2. **Owned routes** (``--owned``, :mod:`bench.owner_routes`): the federation export with and
   without 1 000 routes (bytes, export and import CPU) and the CPU per request of an imported
   route against the same route defined locally.

3. **Data path** (``--dataplane``; needs wrk and nginx, as ``scripts/bench_dataplane.py``):
   nginx, the minimal trio proxy (the floor: the least any trio proxy can do per request) and
   the two-site Isthmus topology of ``bench_dataplane.py``; wrk drives ``web.default.bencha``
   (one hop) through site A's gateway, whose config is swapped by live reloads between
   measurements: no routes; 1 000 routes on other addresses (what holding them costs);
   1 000 routes (``spread``, with a rate limit, a 90/10 weighted pair,
   header edits on the matching route); 1 000 routes on that one address
   (999 walked).  Each figure is site A's gateway CPU per request (from /proc), and its ratio
   to the floor's, all in the same run (the order rotated each of ``--rounds``).

3. **Mirror with a body** (``--mirror``; wrk and nginx too): wrk POSTs a 1 KiB body to
   ``web.default.bencha`` through site A's gateway, whose config is swapped by live reloads
   between: a route without a mirror (the reference); the same route with a body mirror to
   the same service in this site (every request is sent twice: the copy's whole exchange is
   on site A's CPU); a mirror to the service in site B (the copy crosses the link); a mirror
   whose ``max_body_bytes`` is under the body (refused at the declared length: the cost of
   the check alone).  The figure is site A's gateway CPU per caller request, and its ratio to
   the reference's, in the same run (order rotated each round).

Run: ``.venv/bin/python scripts/bench_routes.py`` (engine, ~20 s) or with ``--dataplane``
(~2 minutes) or ``--mirror`` (~1 minute).  Only loopback addresses; every process started
is stopped by PID.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import statistics
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import trio  # noqa: E402

from foundation.spiffe_id import SpiffeId  # noqa: E402
from gateway.config.routes import (  # noqa: E402
    Backend,
    FieldMatch,
    HeaderEdits,
    Mirror,
    PathMatch,
    RateLimit,
    RouteConfig,
    RouteMatch,
)
from gateway.http.exchange import (  # noqa: E402
    Body,
    CallContext,
    EmptyBody,
    Request,
    ResponseWriter,
)
from gateway.http.message import Headers  # noqa: E402
from gateway.observe.record import ExchangeRecord  # noqa: E402
from gateway.routes.forward import Mirrors, RouteRules  # noqa: E402

CALLER = SpiffeId.parse("spiffe://bencha.isthmus.bench/ns/default/sa/client")


# -- route sets ------------------------------------------------------------------------------


def _miss(i: int, kind: str) -> RouteConfig:
    """A route that the benchmark's request does not match (on its path or a header)."""
    if kind == "regex":
        path = PathMatch(regex=f"/r{i}/[a-z]+/[0-9]+")
    elif kind == "alternation":  # literal starts through an alternation: /r12/ or /q12/
        path = PathMatch(regex=f"(?:/r{i}|/q{i})/[a-z]+/[0-9]+")
    elif kind == "open regex":  # no literal start: no index can skip it
        path = PathMatch(regex=f"[^?]*/r{i}/[a-z]+/[0-9]+")
    elif i % 3 == 0:
        path = PathMatch(exact=f"/e{i}")
    else:
        path = PathMatch(prefix=f"/p{i}/")
    headers = (FieldMatch(name="x-tenant", exact=f"t{i}"),) if i % 5 == 0 else ()
    return RouteConfig(address="", match=RouteMatch(path=path, headers=headers))


def _hit(address: str, site: str) -> RouteConfig:
    """The route the request matches, with the actions a canary would carry."""
    return RouteConfig(
        address=address,
        name="hit",
        match=RouteMatch(path=PathMatch(prefix="/"), methods=("GET",)),
        backends=(
            Backend(service="web.default", site=site, weight=90),
            Backend(service="web.default", site=site, weight=10),
        ),
        request_headers=HeaderEdits(add={"x-route": "canary"}, remove=("x-debug",)),
        response_headers=HeaderEdits(add={"x-served-by": "route"}),
        rate_limit=RateLimit(requests_per_s=1e6, burst=1_000_000, key="caller_id"),
    )


REGEX_KINDS = {
    "1000 regex": "regex",
    "1000 regex alt": "alternation",
    "1000 open regex": "open regex",
}


def route_set(kind: str, *, site: str = "bencha", total: int = 1000) -> tuple[RouteConfig, ...]:
    """``spread`` or ``1000 prefix``/``1000 regex`` (see the module docstring)."""
    target = f"web.default.{site}"
    out: list[RouteConfig] = []
    if kind == "spread":
        for a in range(total // 10):
            address = target if a == total // 20 else f"svc{a}.default"
            for i in range(9):
                r = _miss(a * 10 + i, "prefix")
                out.append(RouteConfig(address=address, match=r.match))
            out.append(_hit(address, site) if address == target else _miss_on(address, a))
        return tuple(out)
    for i in range(total - 1):
        r = _miss(i, REGEX_KINDS.get(kind, "prefix"))
        out.append(RouteConfig(address=target, match=r.match))
    out.append(_hit(target, site))
    return tuple(out)


def _miss_on(address: str, a: int) -> RouteConfig:
    return RouteConfig(address=address, match=_miss(a * 10 + 9, "prefix").match)


def routes_toml(routes: tuple[RouteConfig, ...]) -> str:
    """The same routes as ``[[routes]]`` TOML (for the gateway's config)."""
    lines: list[str] = []
    for r in routes:
        lines += ["", "[[routes]]", f'address = "{r.address}"']
        if r.name:
            lines.append(f'name = "{r.name}"')
        m = r.match
        if m.path is not None:
            p = m.path
            kind, value = next((k, v) for k, v in vars(p).items() if v is not None)
            lines.append(f"match.path.{kind} = {json.dumps(value)}")
        if m.methods:
            lines.append(f"match.methods = {json.dumps(list(m.methods))}")
        if m.headers:
            h = m.headers[0]
            lines.append(f'match.headers = [{{ name = "{h.name}", exact = "{h.exact}" }}]')
        if r.backends:
            items = ", ".join(
                f'{{ service = "{b.service}", site = "{b.site}", weight = {b.weight} }}'
                for b in r.backends
            )
            lines.append(f"backends = [{items}]")
        if r.request_headers.add or r.request_headers.remove:
            add = ", ".join(f'"{k}" = "{v}"' for k, v in r.request_headers.add.items())
            lines.append(
                f"request_headers = {{ add = {{ {add} }}, "
                f"remove = {json.dumps(list(r.request_headers.remove))} }}"
            )
        if r.response_headers.add:
            add = ", ".join(f'"{k}" = "{v}"' for k, v in r.response_headers.add.items())
            lines.append(f"response_headers = {{ add = {{ {add} }} }}")
        if r.rate_limit is not None:
            rl = r.rate_limit
            lines.append(
                f"rate_limit = {{ requests_per_s = {rl.requests_per_s}, burst = {rl.burst}, "
                f'key = "{rl.key}" }}'
            )
    return "\n".join(lines) + "\n"


# -- part 1: the engine ------------------------------------------------------------------------


async def _noop(
    request: Request,
    body: Body,
    writer: ResponseWriter,
    ctx: CallContext,
    rec: ExchangeRecord | None,
) -> None:
    return None


def _cpu_us(fn: Callable[[], object], n: int) -> float:
    for _ in range(min(n, 1000)):
        fn()  # warm: caches (parsed authorities, lazy DFA states) as in a running gateway
    begin = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - begin) / n * 1e6


def engine(n: int) -> dict[str, dict[str, float]]:
    ctx = CallContext("bencha", CALLER, deadline=1e12)
    request = Request(
        b"GET",
        b"http",
        b"web.default.bencha.isthmus",
        b"/orders/12345?x=1",
        ((b"user-agent", b"wrk"), (b"accept", b"*/*"), (b"x-debug", b"1")),
    )
    other = Request(b"GET", b"http", b"elsewhere.default.isthmus", b"/orders/1", request.headers)
    out: dict[str, dict[str, float]] = {}
    for kind in ("spread", "1000 prefix", *REGEX_KINDS):
        rules = RouteRules.build(
            route_set(kind), mesh_domain="isthmus", mirrors=Mirrors(), clock=time.monotonic
        )
        assert len(rules.table) == 1000
        route = rules.decide(request, ctx)
        assert route is not None and route.label == "hit", route

        def routed(rules: RouteRules = rules) -> None:
            coro = rules.forward(request, EmptyBody(), None, ctx, None, _noop)  # type: ignore[arg-type]
            with contextlib.suppress(StopIteration):
                coro.send(None)

        out[kind] = {
            "decide_us": _cpu_us(lambda rules=rules: rules.decide(request, ctx), n),
            "forward_us": _cpu_us(routed, n),
        }
        if kind == "spread":
            out["no route"] = {
                "decide_us": _cpu_us(lambda rules=rules: rules.decide(other, ctx), n),
                "forward_us": math_nan(),
            }
    return out


def math_nan() -> float:
    return float("nan")


# -- part 2: the data path ---------------------------------------------------------------------


def _reload(url: str) -> dict[str, object]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request(url + "/config/reload", data=b"", method="POST")
    with opener.open(request, timeout=60) as response:
        doc: dict[str, object] = json.loads(response.read())
    if doc.get("result") not in ("applied", "unchanged"):
        raise RuntimeError(f"reload not applied: {doc}")
    return doc


MIRROR_BODY = 1024
_POST_LUA = f"""wrk.method = "POST"
wrk.body = string.rep("m", {MIRROR_BODY})
wrk.headers["Content-Type"] = "application/octet-stream"
"""


def mirror_variants() -> dict[str, str]:
    """The ``--mirror`` configs: one route on the benchmark's address, with and without a
    mirror (see the module docstring)."""
    head = '\n[[routes]]\naddress = "web.default.bencha"\nname = "mirrored"\n'
    head += 'backends = [{ service = "web.default", site = "bencha" }]\n'
    return {
        "POST, route, no mirror": head,
        "POST, body mirror (this site)": head
        + 'mirror = { service = "web.default", site = "bencha", max_in_flight = 64 }\n',
        "POST, body mirror (site B)": head
        + 'mirror = { service = "web.default", site = "benchb", max_in_flight = 64 }\n',
        "POST, mirror, body over cap": head
        + 'mirror = { service = "web.default", site = "bencha", max_body_bytes = 512 }\n',
    }


def _mirror_counts(admin: str) -> dict[str, float]:
    """Site A's mirror copies started (``sent``) and dropped by reason so far (/metrics)."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(admin + "/metrics", timeout=30) as response:
        text = response.read().decode("utf-8")
    out: dict[str, float] = {"sent": 0.0}
    for line in text.splitlines():
        if line.startswith("isthmus_route_mirror_started_total "):
            out["sent"] = float(line.split()[-1])
        elif line.startswith('isthmus_route_mirror_dropped_total{reason="'):
            reason = line.split('"')[1]
            out[reason] = float(line.split()[-1])
    return out


async def tee_engine(n: int) -> dict[str, float]:
    """In this process: CPU per routed POST of ``MIRROR_BODY`` bytes (one piece) whose
    forward reads the body, with a route without a mirror against one with a body mirror
    (tee, copy, the copy's task started and run to a no-op) -- the mirror's own cost, not
    its exchange's.  Each request yields once so the copies run as they would."""
    ctx = CallContext("bencha", CALLER, deadline=1e12)
    headers = ((b"content-length", b"%d" % MIRROR_BODY),)
    request = Request(b"POST", b"http", b"web.default.bencha.isthmus", b"/orders", headers)
    piece = b"m" * MIRROR_BODY

    class OnePiece:
        trailers: Headers = ()

        def __init__(self) -> None:
            self.left = True

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            if self.left:
                self.left = False
                return piece
            return b""

    async def drain(
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        rec: ExchangeRecord | None,
    ) -> None:
        while await body.receive_some(65536):
            pass

    base = RouteConfig(address="web.default.bencha", name="mirrored")
    configs = {
        "route, no mirror": base,
        "route + body mirror": RouteConfig(
            address=base.address,
            name=base.name,
            mirror=Mirror(service="web.default", site="bencha", max_in_flight=1024),
        ),
    }
    out: dict[str, float] = {}
    mirrors = Mirrors()
    async with trio.open_nursery() as nursery:
        await nursery.start(mirrors.serve)
        for rounds in range(3):  # the order alternated, the best of three kept
            items = list(configs.items())
            for name, config in items if rounds % 2 == 0 else items[::-1]:
                rules = RouteRules.build((config,), mesh_domain="isthmus", mirrors=mirrors)
                begin = time.process_time()
                for _ in range(n):
                    await rules.forward(request, OnePiece(), None, ctx, None, drain)  # type: ignore[arg-type]
                    await trio.lowlevel.checkpoint()
                us = (time.process_time() - begin) / n * 1e6
                out[name] = min(out.get(name, us), us)
        nursery.cancel_scope.cancel()
    if mirrors.dropped or mirrors.started != 3 * n:
        raise RuntimeError(f"copies: {mirrors.started} started, {mirrors.drops} dropped")
    return out


async def dataplane(
    seconds: float, rounds: int, root: Path, *, mirror: bool = False
) -> dict[str, list[float]]:
    from bench.backend import SMALL_BODY, SMALL_PATH, start_backend
    from bench.isthmus import SITE_A, IsthmusSites, start_isthmus
    from bench.load import probe, run_wrk
    from bench.procs import Fleet, cpu_seconds, wait_port
    from bench_dataplane import BACKEND, FLOOR_HOST, FLOOR_PORT, SITE_A_HOST, SITE_B_HOST

    figures: dict[str, list[float]] = {}
    async with Fleet(root / "logs") as fleet:
        await start_backend(fleet, BACKEND, root / "backend")
        floor = await fleet.start(
            "trio-floor",
            [
                sys.executable,
                str(HERE / "bench" / "floor.py"),
                *(FLOOR_HOST, str(FLOOR_PORT), SITE_A_HOST, str(BACKEND.http_port)),
            ],
        )
        await wait_port(FLOOR_HOST, FLOOR_PORT, fleet=fleet)
        sites = await start_isthmus(fleet, SITE_A_HOST, SITE_B_HOST, BACKEND, root / "isthmus")
        config = root / "isthmus" / SITE_A / "gateway.toml"
        if not config.is_file():
            config = next((root / "isthmus").rglob("*.toml"))
            if SITE_A not in config.read_text("utf-8"):
                raise RuntimeError("cannot find site A's config")
        base = config.read_text("utf-8")
        admin = f"http://{SITE_A_HOST}:{sites.topology.admin_port}"
        host = IsthmusSites.host_header(SITE_A)
        script = None
        if mirror:
            script = root / "post.lua"
            script.write_text(_POST_LUA, "utf-8")
        variants = (
            mirror_variants()
            if mirror
            else {
                "no routes": "",
                "1000 routes, none for it": routes_toml(route_set("spread", site="benchb")),
                "1000 routes (spread)": routes_toml(route_set("spread")),
                "1000 routes on the address": routes_toml(route_set("1000 prefix")),
            }
        )

        async def measure(name: str, url_host: str, port: int, header: str, pid: int) -> None:
            status, length = await probe(url_host, port, header, SMALL_PATH)
            if status != 200 or length != len(SMALL_BODY):
                raise RuntimeError(f"{name}: probe gave {status}, {length} bytes")
            copies = await trio.to_thread.run_sync(_mirror_counts, admin) if mirror else None
            before = cpu_seconds([pid])
            before_b = cpu_seconds([sites.pids[1]])
            result = await run_wrk(
                f"http://{url_host}:{port}{SMALL_PATH}",
                host_header=header,
                connections=16,
                seconds=seconds,
                script=script if pid != floor.process.pid else None,
            )
            cpu = cpu_seconds([pid]) - before
            busy_b = (cpu_seconds([sites.pids[1]]) - before_b) / result.seconds
            if result.non_2xx or result.socket_errors:
                raise RuntimeError(
                    f"{name}: {result.non_2xx} non-2xx, {result.socket_errors} errors"
                )
            us = cpu / result.requests * 1e6
            figures.setdefault(name, []).append(us)
            line = f"  {name:32s} {result.rps:9.0f} req/s  {us:7.1f} us CPU/request"
            if copies is not None:  # how many copies the figure paid for
                after = await trio.to_thread.run_sync(_mirror_counts, admin)
                moved = {k: v - copies.get(k, 0.0) for k, v in after.items()}
                line += (
                    "  (copies: "
                    + ", ".join(f"{k} {v:.0f}" for k, v in moved.items() if v or k == "sent")
                    + f"; site B's gateway busy {busy_b:.0%} of a core)"
                )
            print(line, flush=True)

        for round_no in range(rounds):
            print(f"-- round {round_no + 1} of {rounds}", flush=True)
            if not mirror:  # the floor (GET only) is the reference of the routes' figures
                await measure(
                    "trio floor",
                    FLOOR_HOST,
                    FLOOR_PORT,
                    f"{SITE_A_HOST}:{BACKEND.http_port}",
                    floor.process.pid,
                )
            # Rotated each round: no variant always runs first or last (drift, heap growth).
            order = list(variants.items())
            order = order[round_no % len(order) :] + order[: round_no % len(order)]
            for name, text in order:
                config.write_text(base + text, "utf-8")
                await trio.to_thread.run_sync(_reload, admin)
                await measure(name, SITE_A_HOST, sites.http_port, host, sites.pids[0])
        config.write_text(base, "utf-8")
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--matches", type=int, default=20_000, help="engine iterations (20000)")
    parser.add_argument("--dataplane", action="store_true", help="also the data path (wrk)")
    parser.add_argument("--seconds", type=float, default=5.0, help="each wrk run (5)")
    parser.add_argument("--rounds", type=int, default=2, help="data-path rounds (2)")
    parser.add_argument(
        "--owned", action="store_true", help="also routes in the federation export (in-process)"
    )
    parser.add_argument(
        "--mirror", action="store_true", help="only: a route with a body mirror against without"
    )
    args = parser.parse_args(argv)
    if args.mirror:
        return _mirror_main(args.seconds, args.rounds, args.matches)

    print("engine: CPU per request, 1000 routes (this process, no I/O)", flush=True)
    for kind, fig in engine(args.matches).items():
        line = f"  {kind:16s} decide {fig['decide_us']:7.2f} us"
        if fig["forward_us"] == fig["forward_us"]:
            line += f"   decide + actions {fig['forward_us']:7.2f} us"
        print(line, flush=True)
    if args.owned:
        from bench.owner_routes import report

        report(args.matches)
    if not args.dataplane:
        return 0
    lock = open(Path(tempfile.gettempdir()) / "isthmus-bench-dataplane.lock", "w")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)  # the same addresses as bench_dataplane.py: one at a time
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-routes-") as tmp:
        figures = trio.run(dataplane, args.seconds, args.rounds, Path(tmp))
    floor = statistics.median(figures["trio floor"])
    off = statistics.median(figures["no routes"])
    print("data path: site A's gateway CPU per request (median of rounds), one hop", flush=True)
    for name, values in figures.items():
        us = statistics.median(values)
        print(
            f"  {name:32s} {us:7.1f} us   x{us / floor:5.2f} the floor"
            f"   x{us / off:5.3f} no routes",
            flush=True,
        )
    return 0


def _mirror_main(seconds: float, rounds: int, n: int) -> int:
    print(
        f"mirror, in this process: CPU per routed POST of {MIRROR_BODY} bytes (best of 3)",
        flush=True,
    )
    micro = trio.run(tee_engine, n)
    ref_us = micro["route, no mirror"]
    for name, us in micro.items():
        print(f"  {name:32s} {us:7.2f} us   +{us - ref_us:5.2f} us", flush=True)
    lock = open(Path(tempfile.gettempdir()) / "isthmus-bench-dataplane.lock", "w")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX)  # the same addresses as bench_dataplane.py: one at a time
    with tempfile.TemporaryDirectory(prefix="isthmus-bench-routes-") as tmp:
        figures = trio.run(partial(dataplane, seconds, rounds, Path(tmp), mirror=True))
    ref = statistics.median(figures["POST, route, no mirror"])
    print(
        f"mirror: site A's gateway CPU per caller request (median of rounds), POST of "
        f"{MIRROR_BODY} bytes",
        flush=True,
    )
    for name, values in figures.items():
        us = statistics.median(values)
        print(f"  {name:32s} {us:7.1f} us   x{us / ref:5.2f} the route without a mirror")
    return 0


if __name__ == "__main__":
    sys.exit(main())
