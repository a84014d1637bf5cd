#!/usr/bin/env python3
"""CPU per request of the balancer decision: smooth WRR (default) against plain round robin.

Both run in the same process, interleaved in rounds, on the same candidate tuples (endpoints
as the catalog hands them), so the difference is the balancer's alone.  Prints microseconds
of process CPU per pick.  Usage: ``.venv/bin/python scripts/bench_lb.py [picks] [endpoints]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from discovery.model import Endpoint, ServiceName
from gateway.cluster.lb import round_robin
from gateway.cluster.wrr import WrrState, smooth_wrr


def main() -> None:
    picks = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    svc = ServiceName("api")
    eps = tuple(Endpoint(svc, "127.0.0.1", 9000 + i, weight=1 + i % 3) for i in range(n))

    def rr() -> None:
        cursor = 0
        for _ in range(picks):
            _, cursor = round_robin(eps, cursor)

    def wrr() -> None:
        state: WrrState[tuple[str, int]] = WrrState()
        for _ in range(picks):
            # As LocalCluster calls it: keys and weights read from the candidates per request.
            _, state = smooth_wrr(
                eps, [(e.address, e.port) for e in eps], [e.weight for e in eps], state
            )

    totals = {"round_robin": 0.0, "smooth_wrr": 0.0}
    runs: dict[str, Callable[[], None]] = {"round_robin": rr, "smooth_wrr": wrr}
    for _ in range(5):
        for name, fn in runs.items():
            t0 = time.process_time()
            fn()
            totals[name] += time.process_time() - t0
    for name, total in totals.items():
        print(f"{name:12s} {total / (5 * picks) * 1e6:7.2f} us CPU per pick ({n} endpoints)")


if __name__ == "__main__":
    main()
