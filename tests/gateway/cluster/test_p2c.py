"""Least request with two choices: the less loaded of two random picks, weights counted."""

from __future__ import annotations

import random
from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from gateway.cluster.p2c import p2c


@given(
    loads=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=10),
    r1=st.integers(min_value=0, max_value=2**32),
    r2=st.integers(min_value=0, max_value=2**32),
)
def test_picks_the_less_loaded_of_two_distinct_draws(loads: list[int], r1: int, r2: int) -> None:
    n = len(loads)
    order = p2c(list(range(n)), loads, [1] * n, r1, r2)
    assert sorted(order) == list(range(n))
    first = r1 % n
    if n == 1:
        assert order == (0,)
        return
    second = r2 % (n - 1)
    second += second >= first
    assert order[0] in (first, second)
    assert loads[order[0]] == min(loads[first], loads[second])


def _imbalance(two_choices: bool) -> int:
    """Sum over a simulation of (most - least loaded): requests arrive, random ones finish."""
    rng = random.Random(7)
    loads = [0] * 8
    total = 0
    for _ in range(3000):
        r1, r2 = rng.getrandbits(32), rng.getrandbits(32)
        pick = p2c(list(range(8)), loads, [1] * 8, r1, r2)[0] if two_choices else r1 % 8
        loads[pick] += 1
        if sum(loads) > 40:
            done = rng.choice([i for i, x in enumerate(loads) if x])
            loads[done] -= 1
        total += max(loads) - min(loads)
    return total


def test_two_choices_keep_loads_much_closer_than_one_random_choice() -> None:
    assert _imbalance(True) < 0.5 * _imbalance(False)


def test_weights_scale_the_load() -> None:
    # 3 in flight at weight 4 is less loaded than 1 at weight 1.
    assert p2c(["a", "b"], [3, 1], [4, 1], 1, 0)[0] == "a"
    assert p2c(["a", "b"], [0, 0], [0, 1], 0, 0)[0] == "b"  # weight 0 drains


def test_spread_is_even_with_no_load() -> None:
    rng = random.Random(1)
    seen = Counter(
        p2c(list(range(4)), [0] * 4, [1] * 4, rng.getrandbits(32), rng.getrandbits(32))[0]
        for _ in range(4000)
    )
    assert all(800 < seen[i] < 1200 for i in range(4))
