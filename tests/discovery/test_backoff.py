from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from discovery.backoff import Backoff


def test_ceiling_doubles_then_caps() -> None:
    b = Backoff(base_s=0.5, cap_s=10.0)
    assert [b.ceiling(n) for n in range(6)] == [0.5, 1.0, 2.0, 4.0, 8.0, 10.0]
    assert b.ceiling(10_000) == 10.0


@given(st.integers(min_value=0, max_value=5000), st.floats(min_value=0.0, max_value=0.999999))
def test_delay_stays_within_floor_and_ceiling(attempt: int, draw: float) -> None:
    b = Backoff(base_s=0.1, cap_s=30.0, floor_s=0.05)
    d = b.delay(attempt, draw)
    assert 0.05 <= d <= max(0.05, b.ceiling(attempt))


def test_hundred_clients_do_not_retry_in_lock_step() -> None:
    """After a shared failure, the first retries of 100 clients spread over the window."""
    rng = random.Random(7)
    b = Backoff(base_s=1.0, cap_s=30.0)
    delays = sorted(b.delay(5, rng.random()) for _ in range(100))
    # Spread: no tenth of the window holds more than a quarter of the clients.
    buckets = [0] * 10
    for d in delays:
        buckets[min(9, int(d / b.ceiling(5) * 10))] += 1
    assert max(buckets) <= 25
    assert delays[-1] - delays[0] > 0.8 * b.ceiling(5)


def test_bad_arguments_are_rejected() -> None:
    with pytest.raises(ValueError):
        Backoff().delay(0, 1.0)
    with pytest.raises(ValueError):
        Backoff().ceiling(-1)
