#!/usr/bin/env python3
"""CPU per request of metrics and access logs: off, metrics, metrics + access log, same run.

Three copies of one topology run side by side (real gateway processes, each pair: site ``a``
-> link -> site ``b`` -> the whoami service ``api``), identical but for their configs:

* ``off``          ``[metrics] enabled = false`` (no access log): nothing observed;
* ``metrics``      the defaults: every request counted (``/metrics``);
* ``metrics+log``  plus ``[access_log] enabled = true`` to a file, every request sampled.

A keep-alive HTTP/1.1 client in this process sends the same number of requests through each
copy's site ``a`` (two hops: both ends are observed), in rounds that rotate the order; the
CPU seconds of the copy's two gateway processes (``/proc/<pid>/stat``) over a round divided
by its requests is the figure.  It prints the median per variant and the difference to
``off`` in microseconds of gateway CPU per request (both gateways together).

    .venv/bin/python scripts/bench_observe.py                  # ~1 minute
    .venv/bin/python scripts/bench_observe.py --requests 5000 --rounds 5

Only loopback addresses (127.0.41.1 - 127.0.46.1); every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import trio  # noqa: E402
from bench.keepalive import Copy, run_requests, wait_ready  # noqa: E402
from bench.observe import VARIANTS  # noqa: E402
from bench.procs import BenchError, Fleet, cpu_seconds  # noqa: E402

from foundation.spiffe_id import TrustDomain  # noqa: E402
from gateway.demo.runner import gateway_argv, service_argv  # noqa: E402
from gateway.demo.topology import DemoService, DemoSite, Topology, build_topology  # noqa: E402

API = "api.default.isthmus"
API_PORT = 18095




async def start_copy(fleet: Fleet, root: Path, index: int, name: str) -> Copy:
    base = 41 + 2 * index
    sites = tuple(
        DemoSite(
            name=site,
            trust_domain=TrustDomain(f"{site}.bench-observe.test"),
            address=ipaddress.IPv4Address(f"127.0.{base + i}.1"),
            services=(DemoService("api", "http", API_PORT),) if site == "b" else (),
            priority=10 * (i + 1),
        )
        for i, site in enumerate(("a", "b"))
    )
    topology = Topology(sites=sites, ping_interval_s=1.0, ping_timeout_s=2.0)
    directory = root / name.replace("+", "-")
    built = await trio.to_thread.run_sync(build_topology, topology, directory)
    pids = []
    for b in built:
        extra = VARIANTS[name].format(dir=b.directory)
        with b.config_path.open("a", encoding="utf-8") as f:
            f.write(extra)
        child = await fleet.start(
            f"{name}-{b.site.name}", [*gateway_argv(b.config_path), "--log-level", "warning"]
        )
        pids.append(child.process.pid)
        for svc in b.site.services:
            argv = service_argv(svc.kind, str(b.site.address), svc.port, b.site.name)
            await fleet.start(f"{name}-{b.site.name}-{svc.service}", argv)
    copy = Copy(name, str(sites[0].address), topology.http_port, pids)
    return await wait_ready(copy, API, fleet=fleet)


async def bench(args: argparse.Namespace, root: Path) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    async with Fleet(root / "logs") as fleet:
        copies = [await start_copy(fleet, root, i, name) for i, name in enumerate(VARIANTS)]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=3000, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="isthmus-bench-observe-"))
    try:
        results = trio.run(bench, args, root)
    except BenchError as exc:
        print(f"bench_observe: {exc}", file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            import shutil

            shutil.rmtree(root, ignore_errors=True)
    off = statistics.median(results["off"])
    print("\nmedian gateway CPU per request (both gateways of the 2-hop path):")
    for name, samples in results.items():
        med = statistics.median(samples)
        print(
            f"  {name:12s} {med:7.1f} us  ({med - off:+6.1f} us, {100 * (med / off - 1):+5.1f} %)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
