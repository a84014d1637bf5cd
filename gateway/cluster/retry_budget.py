"""A retry budget per service: retries may add at most a fixed share to its load (pure).

Why a budget and not only ``max_retries``: when a service fails for everyone, every request
retried ``n`` times multiplies the load on the failing service by ``n + 1`` exactly when it can
least take it (a retry storm).  Linkerd and Envoy cap retries by a share of the requests
instead; this follows Linkerd's (Finagle's) budget: within the last ``ttl_s`` seconds, the
retries granted stay within ``ratio * requests + min_per_s * ttl_s``.  The ``min_per_s`` term
lets a quiet service still retry its rare failures.

Theory of operation
-------------------
Time is cut into ``SLOTS`` buckets of ``ttl_s / SLOTS`` seconds in a ring; each bucket counts
the requests and the retries that began in it.  :meth:`RetryBudget.record_request` and
:meth:`RetryBudget.try_retry` first drop buckets older than the window, then count.  A retry
is granted (and counted at once, so a check and its withdrawal cannot be split by an
``await``) when one more retry would keep ``retries <= ratio * requests + min_per_s *
ttl_s`` over the buckets in the window.  Memory is ``SLOTS`` pairs of ints per service, the
work per call is O(1) amortised; ``now`` is an argument (``trio.current_time()`` in the
router, any clock in tests).
"""

from __future__ import annotations

import math

from gateway.config.resilience import RetryBudgetConfig

#: Buckets per window: the window slides in steps of ``ttl_s / SLOTS``.
SLOTS = 10


class RetryBudget:
    """The requests and retries of one service over a sliding window (see the module doc)."""

    __slots__ = ("_epoch", "_requests", "_retries", "_total_requests", "_total_retries", "config")

    def __init__(self, config: RetryBudgetConfig) -> None:
        self.config = config
        self._requests = [0] * SLOTS
        self._retries = [0] * SLOTS
        self._total_requests = 0
        self._total_retries = 0
        #: The bucket number (``floor(now / slot width)``) the newest bucket belongs to.
        self._epoch: int | None = None

    def _advance(self, now: float) -> int:
        """Drop the buckets that left the window by ``now``; the index of ``now``'s bucket."""
        epoch = math.floor(now * SLOTS / self.config.ttl_s)
        last = self._epoch
        if last is None or epoch - last >= SLOTS:
            self._requests = [0] * SLOTS
            self._retries = [0] * SLOTS
            self._total_requests = self._total_retries = 0
        elif epoch > last:
            for e in range(last + 1, epoch + 1):
                i = e % SLOTS
                self._total_requests -= self._requests[i]
                self._total_retries -= self._retries[i]
                self._requests[i] = self._retries[i] = 0
        if last is None or epoch > last:
            self._epoch = epoch
        # A clock that went back (it never does for trio's) counts in the newest bucket.
        assert self._epoch is not None
        return self._epoch % SLOTS

    def record_request(self, now: float) -> None:
        """A request (its first attempt) began at ``now``."""
        i = self._advance(now)
        self._requests[i] += 1
        self._total_requests += 1

    def allowance(self, now: float) -> float:
        """How many retries the window allows in all at ``now`` (granted ones included)."""
        self._advance(now)
        c = self.config
        return c.ratio * self._total_requests + c.min_per_s * c.ttl_s

    def try_retry(self, now: float) -> bool:
        """Grant one retry at ``now`` and count it, or refuse it (nothing counted)."""
        if self._total_retries + 1 > self.allowance(now):
            return False
        i = self._advance(now)
        self._retries[i] += 1
        self._total_retries += 1
        return True

    def statistics(self, now: float) -> tuple[int, int]:
        """(requests, retries) in the window at ``now``."""
        self._advance(now)
        return self._total_requests, self._total_retries
