"""Token buckets: refill at the rate up to the burst; bounded in keys."""

from __future__ import annotations

import pytest

from gateway.routes.buckets import TokenBuckets


def test_burst_then_refill_and_retry_after() -> None:
    buckets = TokenBuckets(rate=2.0, burst=3, max_keys=10)
    assert [buckets.take(b"k", 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert buckets.take(b"k", 0.0) == pytest.approx(0.5)  # one token back in 1/rate s
    assert buckets.take(b"k", 0.25) == pytest.approx(0.25)
    assert buckets.take(b"k", 0.5) == 0.0
    assert buckets.take(b"other", 0.5) == 0.0  # every key has its own bucket
    assert buckets.take(b"k", 100.0) == 0.0  # refilled, capped at the burst
    assert [buckets.take(b"k", 100.0) for _ in range(3)][-1] > 0


def test_keys_are_bounded_least_recently_used_first() -> None:
    buckets = TokenBuckets(rate=1.0, burst=1, max_keys=2)
    buckets.take(b"a", 0.0)
    buckets.take(b"b", 0.0)
    buckets.take(b"a", 0.0)  # a used again: b is now the oldest
    buckets.take(b"c", 0.0)
    assert len(buckets) == 2
    assert buckets.take(b"a", 0.0) > 0  # a was kept (still empty)
    assert buckets.take(b"b", 0.0) == 0.0  # b was forgotten: a full bucket again
