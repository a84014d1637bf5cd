"""Compare request latency with a load on and off in the same phase, interleaved.  BENCH-ONLY.

Why: on a shared machine the latency of one phase against another's measures the machine's
mood as much as the change (``bench_stall.py`` saw the baseline's p99 move from 3.4 to 256 ms
between two runs of the same tree, while other jobs ran).  Switching the load on and off every
few seconds within one phase, and sorting each request by when it was sent, gives both sides
the same machine: drift lands on both alike.

A request counts for the *on* side when it was sent at least ``settle_on_s`` after the load
was switched on (the load's first burst may come later), for the *off* side at least
``settle_off_s`` after it was switched off (the last burst's work must be over); the rest is
left out of both.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Sides:
    on: tuple[float, ...]  # latencies, sorted
    off: tuple[float, ...]
    left_out: int

    @staticmethod
    def quantile(latencies: Sequence[float], q: float) -> float:
        if not latencies:
            return float("nan")
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]


def sides(
    timed: Sequence[tuple[float, float]],
    toggles: Sequence[tuple[float, bool]],
    *,
    settle_on_s: float,
    settle_off_s: float,
    start_on: bool = False,
    start_at: float = float("-inf"),
) -> Sides:
    """Sort ``timed`` = (sent at, latency) by ``toggles`` = (at, on after it), in time order.

    Before the first toggle the load is ``start_on`` since ``start_at``.
    """
    times = [at for at, _ in toggles]
    if times != sorted(times):
        raise ValueError("toggles must be in time order")
    on: list[float] = []
    off: list[float] = []
    left_out = 0
    for sent, latency in timed:
        i = bisect.bisect_right(times, sent) - 1
        since, state = (start_at, start_on) if i < 0 else toggles[i]
        settled = sent - since >= (settle_on_s if state else settle_off_s)
        if not settled:
            left_out += 1
        elif state:
            on.append(latency)
        else:
            off.append(latency)
    return Sides(tuple(sorted(on)), tuple(sorted(off)), left_out)
