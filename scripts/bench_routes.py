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

Run: ``.venv/bin/python scripts/bench_routes.py`` (engine, ~20 s) or with ``--dataplane``
(~2 minutes).  Only loopback addresses; every process started is stopped by PID.
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
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import trio  # noqa: E402

from foundation.spiffe_id import SpiffeId  # noqa: E402
from gateway.config.routes import (  # noqa: E402
    Backend,
    FieldMatch,
    HeaderEdits,
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


async def dataplane(seconds: float, rounds: int, root: Path) -> dict[str, list[float]]:
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
        variants = {
            "no routes": "",
            "1000 routes, none for it": routes_toml(route_set("spread", site="benchb")),
            "1000 routes (spread)": routes_toml(route_set("spread")),
            "1000 routes on the address": routes_toml(route_set("1000 prefix")),
        }

        async def measure(name: str, url_host: str, port: int, header: str, pid: int) -> None:
            status, length = await probe(url_host, port, header, SMALL_PATH)
            if status != 200 or length != len(SMALL_BODY):
                raise RuntimeError(f"{name}: probe gave {status}, {length} bytes")
            before = cpu_seconds([pid])
            result = await run_wrk(
                f"http://{url_host}:{port}{SMALL_PATH}",
                host_header=header,
                connections=16,
                seconds=seconds,
            )
            cpu = cpu_seconds([pid]) - before
            if result.non_2xx or result.socket_errors:
                raise RuntimeError(
                    f"{name}: {result.non_2xx} non-2xx, {result.socket_errors} errors"
                )
            us = cpu / result.requests * 1e6
            figures.setdefault(name, []).append(us)
            print(f"  {name:32s} {result.rps:9.0f} req/s  {us:7.1f} us CPU/request", flush=True)

        for round_no in range(rounds):
            print(f"-- round {round_no + 1} of {rounds}", flush=True)
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
    args = parser.parse_args(argv)

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


if __name__ == "__main__":
    sys.exit(main())
