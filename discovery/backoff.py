"""Exponential backoff with full jitter -- the one retry schedule every adapter uses.

Why full jitter (delay drawn uniformly from ``[0, min(cap, base * 2**attempt)]``): after a
shared outage -- Consul restarting, a peer gateway coming back -- a hundred clients retrying on
the same schedule arrive in lock-step and knock the service over again.  Drawing the whole
delay at random spreads them over the window (AWS Architecture Blog, "Exponential Backoff And
Jitter").  Pure: the caller passes the random draw, so tests are deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    base_s: float = 0.1
    cap_s: float = 30.0
    floor_s: float = 0.0  # never retry faster than this (keeps a broken peer from spinning)

    def ceiling(self, attempt: int) -> float:
        """The upper bound of the delay before retry number ``attempt`` (0-based)."""
        if attempt < 0:
            raise ValueError("attempt must be >= 0")
        # 2**attempt overflows floats only around attempt 1024; cap the exponent well before.
        return min(self.cap_s, self.base_s * float(2 ** min(attempt, 62)))

    def delay(self, attempt: int, draw: float) -> float:
        """The delay before retry ``attempt`` given a uniform ``draw`` in ``[0, 1)``."""
        if not 0.0 <= draw < 1.0:
            raise ValueError("draw must be in [0, 1)")
        return max(self.floor_s, self.ceiling(attempt) * draw)
