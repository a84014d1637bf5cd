#!/usr/bin/env python3
"""CPU per request of ``isthmus explain``'s data-path parts, on against off, same run.

Three copies of one topology (real gateway processes: site ``a`` -> link -> site ``b`` -> the
whoami service ``api``), identical but for ``[debug]`` and the requests:

* ``off``         the default: ``[debug]`` allows nobody (the check is two attribute reads);
* ``debug-on``    ``[debug] allow_cidrs = ["127.0.0.0/8"]``, requests without the header
                  (the header-name scan every request pays once someone may trace);
* ``traced``      the same, every request carrying ``x-isthmus-debug: trace`` (each one also
                  asks ``b`` over the link for its verdict: a debug tool, not a data path).

A keep-alive HTTP/1.1 client sends the same number of requests through each copy, in rounds
that rotate the order; gateway CPU (``/proc/<pid>/stat``, both gateways) per request is the
figure, median over rounds, with the difference to ``off``.  Then, in this process, the two
always-on additions are timed alone against the same ``off`` figure: the destination's scan
for the ``isthmus-explain`` marker on a typical peer header block, and naming the endpoint on
the access-log record (a ContextVar read and a string format).

    .venv/bin/python scripts/bench_debug_trace.py                  # ~1-2 minutes
    .venv/bin/python scripts/bench_debug_trace.py --requests 5000 --rounds 5

Only loopback addresses (127.0.51.1 - 127.0.56.1); every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import timeit
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from bench.keepalive import API, Copy, run_bench, run_requests, start_two_sites  # noqa: E402
from bench.procs import Fleet, cpu_seconds  # noqa: E402

from gateway.inbound.explain_answer import is_question  # noqa: E402
from gateway.observe.record import CURRENT_RECORD, ExchangeRecord, note_endpoint  # noqa: E402

API_PORT = 18096
DEBUG_ON = '\n[debug]\nallow_cidrs = ["127.0.0.0/8"]\n'
VARIANTS = {"off": ("", False), "debug-on": (DEBUG_ON, False), "traced": (DEBUG_ON, True)}




async def start_copy(fleet: Fleet, root: Path, index: int, name: str) -> Copy:
    config, traced = VARIANTS[name]
    return await start_two_sites(
        fleet,
        root,
        name,
        subnet=51 + 2 * index,
        label="bench-debug",
        api_port=API_PORT,
        config=lambda _directory: config,
        extra_headers=[("x-isthmus-debug", "trace")] if traced else (),
        expect_field=b"x-isthmus-trace",
    )


async def bench(args: argparse.Namespace, root: Path) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {name: [] for name in VARIANTS}
    async with Fleet(root / "logs") as fleet:
        copies = [await start_copy(fleet, root, i, name) for i, name in enumerate(VARIANTS)]
        for copy in copies:
            await run_requests(copy, API, min(300, args.requests), args.connections)
        for r in range(args.rounds):
            order = copies[r % len(copies) :] + copies[: r % len(copies)]
            for copy in order:
                before = cpu_seconds(copy.pids)
                done = await run_requests(copy, API, args.requests, args.connections)
                per = (cpu_seconds(copy.pids) - before) / done * 1e6
                results[copy.name].append(per)
                print(f"round {r + 1} {copy.name:9s} {done} requests, {per:7.1f} us CPU/request")
    return results


def micro() -> dict[str, float]:
    """Microseconds per call of the always-on additions, timed alone in this process."""
    block = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"api.default.isthmus"),
        (b":path", b"/"),
        (b"user-agent", b"curl/8"),
        (b"accept", b"*/*"),
        (b"isthmus-caller-site", b"a"),
        (b"isthmus-deadline-ms", b"15000"),
        (b"isthmus-request-id", b"0" * 32),
    ]
    n = 200_000
    scan = min(timeit.repeat(lambda: is_question(block), number=n, repeat=5)) / n * 1e6
    rec = ExchangeRecord("destination", "east-west", "0" * 32, 0.0, 0.0, "GET", API, "/", "a", None)
    CURRENT_RECORD.set(rec)
    note = min(timeit.repeat(lambda: note_endpoint("10.0.0.7", 8080), number=n, repeat=5)) / n
    return {"isthmus-explain scan": scan, "access-log endpoint": note * 1e6}


def main(argv: list[str] | None = None) -> int:
    results = run_bench("bench_debug_trace", __doc__, bench, argv, requests=2000, connections=4)
    if results is None:
        return 2
    off = statistics.median(results["off"])
    print("\nmedian gateway CPU per request (both gateways of the 2-hop path):")
    for name, samples in results.items():
        med = statistics.median(samples)
        print(f"  {name:9s} {med:7.1f} us  ({med - off:+6.1f} us, {100 * (med / off - 1):+5.1f} %)")
    print("always-on additions, timed alone (per request, against 'off'):")
    for name, us in micro().items():
        print(f"  {name:22s} {us:6.3f} us  ({100 * us / off:.3f} % of {off:.1f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
