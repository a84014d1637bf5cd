"""Token buckets per key, for a route's rate limit (pure: ``now`` is an argument).

Why local buckets: a route's limit is enforced by the gateway that takes the decision, with
no coordination between gateways (each site's gateway limits its own callers).  The keys
(caller SPIFFE IDs, origin sites, header values) come from requests, so the table of buckets
is bounded (``max_keys``): when full, the least recently used key is forgotten -- it starts
again with a full bucket, which errs towards letting a request through, never towards
growing without bound.
"""

from __future__ import annotations

from collections import OrderedDict


class TokenBuckets:
    """``rate`` tokens per second up to ``burst``; one token per request."""

    __slots__ = ("_buckets", "burst", "max_keys", "rate")

    def __init__(self, *, rate: float, burst: int, max_keys: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.max_keys = max_keys
        #: key -> (tokens, when they were counted); most recently used last.
        self._buckets: OrderedDict[bytes, tuple[float, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def take(self, key: bytes, now: float) -> float:
        """Take a token for ``key``: 0.0 if granted, else the seconds until one is back."""
        got = self._buckets.get(key)
        if got is None:
            tokens = self.burst
            if len(self._buckets) >= self.max_keys:
                self._buckets.popitem(last=False)
        else:
            tokens = min(self.burst, got[0] + (now - got[1]) * self.rate)
            self._buckets.move_to_end(key)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            return 0.0
        self._buckets[key] = (tokens, now)
        return (1.0 - tokens) / self.rate
