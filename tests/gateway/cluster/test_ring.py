"""The consistent hash ring: stable picks, minimal movement, weighted spread."""

from __future__ import annotations

from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cluster.ring import MAX_POINTS, build_ring, hash64, ring_order

SAMPLES = [hash64(b"user-%d" % i) for i in range(4000)]


def names(n: int, offset: int = 0) -> list[str]:
    return [f"10.0.{(i + offset) // 250}.{(i + offset) % 250}:8080" for i in range(n)]


def owners(ring_names: list[str], weights: list[int]) -> list[str]:
    ring = build_ring(ring_names, weights, points_per_weight=40)
    return [ring.names[ring_order(ring, h, 1)[0]] for h in SAMPLES]


@settings(max_examples=30, deadline=None)
@given(n=st.integers(min_value=1, max_value=12))
def test_adding_an_endpoint_moves_keys_only_to_it(n: int) -> None:
    old = names(n)
    new = names(n + 1)
    before = owners(old, [1] * n)
    after = owners(new, [1] * (n + 1))
    added = new[-1]
    assert all(a in (b, added) for b, a in zip(before, after, strict=True))
    # ... and it takes roughly its share, not everything (hash spread; generous bound).
    moved = sum(1 for b, a in zip(before, after, strict=True) if a != b)
    assert moved < len(SAMPLES) * 2.5 / (n + 1)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(min_value=2, max_value=12), data=st.data())
def test_removing_an_endpoint_moves_only_its_keys(n: int, data: st.DataObject) -> None:
    old = names(n)
    gone = data.draw(st.sampled_from(old))
    new = [x for x in old if x != gone]
    before = owners(old, [1] * n)
    after = owners(new, [1] * (n - 1))
    assert all(a == b for b, a in zip(before, after, strict=True) if b != gone)


def test_equal_weights_spread_evenly_and_weights_count() -> None:
    for n in (2, 5, 10):
        ring = build_ring(names(n), [1] * n)
        counts = Counter(ring_order(ring, h, 1)[0] for h in SAMPLES)
        share = len(SAMPLES) / n
        assert all(0.6 * share < counts[i] < 1.4 * share for i in range(n)), counts
    ring = build_ring(names(2), [3, 1])
    counts = Counter(ring_order(ring, h, 1)[0] for h in SAMPLES)
    assert 2.0 < counts[0] / counts[1] < 4.5


def test_fallbacks_are_distinct_and_the_ring_is_bounded() -> None:
    ring = build_ring(names(5), [1] * 5)
    for h in SAMPLES[:200]:
        order = ring_order(ring, h, 3)
        assert len(order) == 3 == len(set(order))
    assert ring_order(build_ring(names(2), [1, 1]), 5, 3) in ((0, 1), (1, 0))
    big = build_ring(names(1000), [1000] * 1000)
    assert len(big.points) <= MAX_POINTS + 1000  # at least one point each
    assert ring_order(build_ring([], []), 5, 3) == ()
    assert build_ring(names(2), [0, 1]).members == 1  # weight 0 owns no point


def test_same_key_same_pick_across_builds() -> None:
    a = build_ring(names(4), [1, 2, 1, 1])
    b = build_ring(names(4), [1, 2, 1, 1])
    assert all(ring_order(a, h, 3) == ring_order(b, h, 3) for h in SAMPLES[:500])
