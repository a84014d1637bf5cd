"""Round robin as a pure function: fair spread, fallbacks, stable cursor."""

from __future__ import annotations

from collections import Counter

from hypothesis import given
from hypothesis import strategies as st

from gateway.cluster.lb import CURSOR_WRAP, round_robin


@given(
    n=st.integers(min_value=1, max_value=20),
    cycles=st.integers(min_value=1, max_value=10),
    cursor=st.integers(min_value=0, max_value=10**15),  # the wrap (2**62) costs one uneven step
)
def test_k_cycles_pick_every_candidate_exactly_k_times(n: int, cycles: int, cursor: int) -> None:
    candidates = [f"ep{i}" for i in range(n)]
    picks: Counter[str] = Counter()
    for _ in range(n * cycles):
        order, cursor = round_robin(candidates, cursor)
        picks[order[0]] += 1
    assert picks == Counter({c: cycles for c in candidates})


@given(n=st.integers(min_value=1, max_value=20), cursor=st.integers(min_value=0, max_value=10**6))
def test_order_is_a_rotation_holding_every_candidate_once(n: int, cursor: int) -> None:
    candidates = list(range(n))
    order, nxt = round_robin(candidates, cursor)
    assert sorted(order) == candidates
    start = order[0]
    assert list(order) == candidates[start:] + candidates[:start]
    assert nxt == cursor + 1


@given(
    sizes=st.lists(st.integers(min_value=1, max_value=8), min_size=2, max_size=30),
    cursor=st.integers(min_value=0, max_value=100),
)
def test_consecutive_picks_differ_while_the_set_is_stable(sizes: list[int], cursor: int) -> None:
    n = max(sizes)
    if n < 2:
        return
    candidates = list(range(n))
    previous = None
    for _ in sizes:
        order, cursor = round_robin(candidates, cursor)
        assert order[0] != previous
        previous = order[0]


def test_empty_candidates_pick_nothing_and_keep_the_cursor() -> None:
    assert round_robin([], 7) == ((), 7)


def test_cursor_wraps_and_stays_bounded() -> None:
    order, nxt = round_robin(["a", "b"], CURSOR_WRAP - 1)
    assert nxt == 0 and order[0] == ("a" if (CURSOR_WRAP - 1) % 2 == 0 else "b")
