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
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench.keepalive import API, Copy, run_bench, run_requests, start_two_sites  # noqa: E402
from bench.observe import VARIANTS  # noqa: E402
from bench.procs import Fleet, cpu_seconds  # noqa: E402

API_PORT = 18095




async def start_copy(fleet: Fleet, root: Path, index: int, name: str) -> Copy:
    return await start_two_sites(
        fleet,
        root,
        name,
        subnet=41 + 2 * index,
        label="bench-observe",
        api_port=API_PORT,
        config=lambda directory: VARIANTS[name].format(dir=directory),
    )


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
    results = run_bench("bench_observe", __doc__, bench, argv)
    if results is None:
        return 2
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
