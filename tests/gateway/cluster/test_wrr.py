"""Smooth weighted round robin as a pure function: exact shares, interleaving, bounded state."""

from __future__ import annotations

from collections import Counter

from hypothesis import example, given
from hypothesis import strategies as st

from gateway.cluster.wrr import MAX_WEIGHT, WrrState, effective_weights, smooth_wrr

weights_st = st.lists(st.integers(min_value=0, max_value=12), min_size=1, max_size=8)


def run(weights: list[int], picks: int, state: WrrState[int] | None = None) -> Counter[int]:
    keys = list(range(len(weights)))
    state = state or WrrState()
    seen: Counter[int] = Counter()
    for _ in range(picks):
        order, state = smooth_wrr(keys, keys, weights, state)
        seen[order[0]] += 1
    return seen


@given(weights=weights_st, cycles=st.integers(min_value=1, max_value=4))
def test_every_full_cycle_gives_each_candidate_exactly_its_weight(
    weights: list[int], cycles: int
) -> None:
    eff = effective_weights(weights)
    seen = run(weights, sum(eff) * cycles)
    assert seen == Counter({i: w * cycles for i, w in enumerate(eff) if w})


@given(weights=weights_st, picks=st.integers(min_value=1, max_value=200))
def test_any_prefix_is_within_one_pick_of_the_ideal_share(weights: list[int], picks: int) -> None:
    eff = effective_weights(weights)
    seen = run(weights, picks)
    total = sum(eff)
    for i, w in enumerate(eff):
        assert abs(seen[i] - picks * w / total) < len(eff)  # smooth: never a burst


@given(weights=weights_st, picks=st.integers(min_value=0, max_value=100))
@example(weights=[1, 1, 1, 1, 1, 8, 8], picks=16)  # a heavy peer that lost a tie sits above total
def test_state_stays_bounded_and_sums_to_zero(weights: list[int], picks: int) -> None:
    """No drift: the state sums to zero and stays within a bound that does not grow with picks.

    The bound is the one that follows from the algorithm: the pick holds the largest value
    after the additions (at least ``total / n``), so after subtracting ``total`` it is above
    ``-total``; nothing else ever decreases; and since the values sum to zero, none exceeds
    ``(n - 1) * total``.  (A tighter ``<= total`` does not hold: with weights 1,1,1,1,1,8,8 an
    8 that lost a tie reaches 23 with total 21.)
    """
    keys = list(range(len(weights)))
    state: WrrState[int] = WrrState()
    total = sum(effective_weights(weights))
    n = len(weights)
    for _ in range(picks):
        order, state = smooth_wrr(keys, keys, weights, state)
        assert sorted(order) == keys  # every candidate once: the pick, then the fallbacks
        assert sum(state.current) == 0
        assert all(-total <= c <= (n - 1) * total for c in state.current)


def test_interleaves_instead_of_bursting() -> None:
    names = ["a", "b", "c"]
    state: WrrState[str] = WrrState()
    picks = []
    for _ in range(7):
        order, state = smooth_wrr(names, names, [5, 1, 1], state)
        picks.append(order[0])
    assert picks == ["a", "a", "b", "a", "c", "a", "a"]


def test_nine_to_one() -> None:
    assert run([9, 1], 100) == Counter({0: 90, 1: 10})


def test_zero_weight_drains_but_stays_a_fallback_and_all_zero_is_equal() -> None:
    order, _ = smooth_wrr(["a", "b"], ["a", "b"], [0, 3], WrrState())
    assert order == ("b", "a")
    assert run([0, 0, 0], 9) == Counter({0: 3, 1: 3, 2: 3})
    assert effective_weights([-5, 10**9]) == (0, MAX_WEIGHT)


@given(
    weights=st.lists(st.integers(min_value=1, max_value=9), min_size=2, max_size=6),
    drop=st.data(),
    warmup=st.integers(min_value=0, max_value=30),
)
def test_a_changed_candidate_list_carries_state_and_stays_exact(
    weights: list[int], drop: st.DataObject, warmup: int
) -> None:
    keys = list(range(len(weights)))
    state: WrrState[int] = WrrState()
    for _ in range(warmup):
        _, state = smooth_wrr(keys, keys, weights, state)
    gone = drop.draw(st.sampled_from(keys))
    left = [k for k in keys if k != gone] + [99]  # one leaves, a newcomer joins
    left_w = [weights[k] for k in left[:-1]] + [2]
    seen: Counter[int] = Counter()
    for _ in range(sum(left_w)):
        order, state = smooth_wrr(left, left, left_w, state)
        assert sum(state.current) == 0
        seen[order[0]] += 1
    # After a change, the next full cycles are exact again (allowing the first to settle).
    seen.clear()
    for _ in range(sum(left_w) * 2):
        order, state = smooth_wrr(left, left, left_w, state)
        seen[order[0]] += 1
    assert seen == Counter({k: 2 * w for k, w in zip(left, left_w, strict=True)})


def test_empty_keeps_state() -> None:
    state: WrrState[int] = WrrState((1,), (0,))
    assert smooth_wrr([], [], [], state) == ((), state)
