#!/usr/bin/env python3
"""CPU per request of retries, retry budgets and breakers: off, defaults, configured, same run.

Three copies of one topology run side by side (real gateway processes, each pair: site ``a``
-> link -> site ``b`` -> the whoami service ``api``), identical but for:

* ``off``         the gateways run with the router's resilience layer removed (the launcher
                  replaces ``gateway.app.Resilience`` before ``isthmus run``): a failure only
                  fails over, as before retries existed;
* ``defaults``    as shipped: retries on connect-failure/refused-stream, the budget, breakers;
* ``configured``  a ``[[service_traffic]]`` rule for every service: retries on 5xx, reset,
                  connect-failure and refused-stream (2 at most), a per-try timeout, tighter
                  breakers.

Plus the floor: the minimal trio HTTP/1.1 proxy (scripts/bench/floor.py) in front of site
``b``'s whoami, one hop, measured the same way; Isthmus figures are two hops (both gateways),
so the ratio printed is against two floor hops.

A keep-alive HTTP/1.1 client in this process sends the same number of GETs through each
copy's site ``a`` in rounds that rotate the order; the CPU seconds of the copy's processes
(``/proc/<pid>/stat``) over a round divided by its requests is the figure (median of rounds).

    .venv/bin/python scripts/bench_resilience.py                  # ~1 minute
    .venv/bin/python scripts/bench_resilience.py --requests 5000 --rounds 5

Only loopback addresses (127.0.71.1 - 127.0.77.1); every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import trio  # noqa: E402
from bench.keepalive import API, Copy, run_bench, run_requests, start_two_sites, wait_ready  # noqa: E402
from bench.procs import Fleet, cpu_seconds  # noqa: E402

from discovery.model import ServiceName  # noqa: E402
from gateway.config.model import ServiceTrafficConfig  # noqa: E402
from gateway.config.resilience import BreakerConfig, RetryConfig  # noqa: E402
from gateway.demo.runner import gateway_argv  # noqa: E402
from gateway.http.exchange import (  # noqa: E402
    Body,
    CallContext,
    EmptyBody,
    Request,
    Response,
    ResponseWriter,
)
from gateway.http.message import Headers  # noqa: E402
from gateway.router.retry import Resilience, resilience_resolver  # noqa: E402
from gateway.router.route import NoHealthySite, did_no_work  # noqa: E402

API_PORT = 18116
FLOOR_PORT = 18117
CONFIGURED = """
[[service_traffic]]
service = "*"
[service_traffic.retries]
on = ["5xx", "reset", "connect-failure", "refused-stream"]
max_retries = 2
per_try_timeout_s = 5.0
[service_traffic.breakers]
max_requests = 5000
max_pending_requests = 5000
max_retries = 100
"""
VARIANTS = {"off": "", "defaults": "", "configured": CONFIGURED}
#: ``isthmus run`` with the resilience layer taken out (the router then only fails over).
WITHOUT_RESILIENCE = (
    "import sys, gateway.app as app; app.Resilience = lambda *a, **k: None; "
    "from gateway.cli import main; sys.exit(main())"
)




def _gateway(name: str) -> Callable[[Path], list[str]]:
    """``isthmus run``, or for ``off`` the same with the resilience layer taken out."""

    def argv(config: Path) -> list[str]:
        run = gateway_argv(config)
        return [sys.executable, "-c", WITHOUT_RESILIENCE, *run[3:]] if name == "off" else run

    return argv


async def start_copy(fleet: Fleet, root: Path, index: int, name: str) -> Copy:
    return await start_two_sites(
        fleet,
        root,
        name,
        subnet=71 + 2 * index,
        label="bench-resilience",
        api_port=API_PORT,
        config=lambda _directory: VARIANTS[name],
        gateway=_gateway(name),
    )


async def bench(args: argparse.Namespace, root: Path) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in (*VARIANTS, "floor")}
    async with Fleet(root / "logs") as fleet:
        copies = [await start_copy(fleet, root, i, name) for i, name in enumerate(VARIANTS)]
        # The floor: one minimal trio hop in front of the first copy's whoami in site b.
        b_host = str(ipaddress.IPv4Address(copies[0].a_host) + 256)
        floor_host = "127.0.77.1"
        floor = await fleet.start(
            "trio-floor",
            [
                sys.executable,
                str(HERE / "bench" / "floor.py"),
                floor_host,
                str(FLOOR_PORT),
                b_host,
                str(API_PORT),
            ],
        )
        copies.append(Copy("floor", floor_host, FLOOR_PORT, [floor.process.pid]))
        await wait_ready(copies[-1], API, within_s=30)
        for copy in copies:  # warm-up (connections, caches, the first imports)
            await run_requests(copy, API, min(500, args.requests), args.connections)
        for r in range(args.rounds):
            order = copies[r % len(copies) :] + copies[: r % len(copies)]
            for copy in order:
                before = cpu_seconds(copy.pids)
                done = await run_requests(copy, API, args.requests, args.connections)
                used = cpu_seconds(copy.pids) - before
                per = used / done * 1e6
                results[copy.name].append(per)
                print(f"round {r + 1} {copy.name:12s} {done} requests, {per:7.1f} us CPU/request")
    return results


class _NullWriter:
    head_sent = False

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None:
        return None

    async def send_data(self, data: bytes) -> None:
        return None

    async def send_end(self, trailers: Headers = ()) -> None:
        return None


class _NullCluster:
    async def forward(
        self,
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        *,
        service: ServiceName,
    ) -> None:
        await writer.send_head(Response(200, ()))
        await writer.send_end()


async def adapter_cost(count: int = 50_000) -> dict[str, float]:
    """The resilience layer's own CPU per request, in process, around a cluster that answers
    at once (no I/O): the part of the figures above that this layer adds, without the noise."""
    service = ServiceName("api", "default")
    request = Request(b"GET", b"http", API.encode(), b"/", ())
    cluster, writer = _NullCluster(), _NullWriter()
    ctx = CallContext("a", None, trio.current_time() + 3600.0)
    start = time.process_time()
    for _ in range(count):
        await cluster.forward(request, EmptyBody(), writer, ctx, service=service)
    base = time.process_time() - start
    rules = {
        "defaults": [],
        "configured": [
            ServiceTrafficConfig(
                retries=RetryConfig(on=("5xx", "reset"), per_try_timeout_s=5.0),
                breakers=BreakerConfig(max_requests=5000),
            )
        ],
    }
    out = {}
    for name, rule in rules.items():
        res = Resilience(resilience_resolver(rule))
        start = time.process_time()
        for _ in range(count):
            await res.forward(
                service=service,
                sites=("a",),
                cluster_for=lambda site: cluster,
                request=request,
                body=EmptyBody(),
                writer=writer,
                ctx=ctx,
                did_no_work=did_no_work,
                what=API,
                exhausted=NoHealthySite,
            )
        out[name] = (time.process_time() - start - base) / count * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    results = run_bench("bench_resilience", __doc__, bench, argv)
    if results is None:
        return 2
    micro = trio.run(adapter_cost)
    off = statistics.median(results["off"])
    floor = statistics.median(results["floor"])
    print("\nmedian CPU per request (Isthmus: both gateways of the 2-hop path; floor: 1 hop):")
    print(f"  {'floor':12s} {floor:7.1f} us  (one trio hop)")
    for name in VARIANTS:
        med = statistics.median(results[name])
        print(
            f"  {name:12s} {med:7.1f} us  ({med - off:+6.1f} us, {100 * (med / off - 1):+5.1f} % "
            f"vs off; {med / (2 * floor):4.2f}x two floor hops)"
        )
    print("\nthe layer alone, in process (no I/O), extra CPU per request at the origin gateway:")
    for name, extra in micro.items():
        print(f"  {name:12s} {extra:6.1f} us  ({extra / floor:4.2f}x one floor hop)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
