"""The sliced catalog core: same results as the one-go call, never more than a slice per pause.

The trio-level guarantee (no task step of the catalog service handles more than a slice) is in
``test_no_stall.py``; here the pure generators are checked against the synchronous entry points
for any event sequence, at slice bounds small enough that every loop pauses.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discovery.catalog import (
    apply_many,
    apply_many_steps,
    expire,
    expire_steps,
)
from discovery.events import Event, Resynced, SourceStale
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from discovery.steps import Steps, check_slice
from tests.discovery.test_catalog_properties import POLICY, events, steps


def run_counting(gen: Steps[tuple[Catalog, object]], slice_items: int) -> tuple[object, int]:
    """Run ``gen`` to the end; check every pause reports 1..slice_items items; count pauses."""
    pauses = 0
    while True:
        try:
            done = next(gen)
        except StopIteration as stop:
            return stop.value, pauses
        assert 1 <= done <= slice_items
        pauses += 1


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, max_size=15), st.integers(1, 4))
def test_sliced_equals_one_go(
    sequence: list[tuple[float, list[Event] | None]], slice_items: int
) -> None:
    one_go = sliced = Catalog()
    now = 0.0
    for advance, batch in sequence:
        now += advance
        if batch is None:
            expected = expire(one_go, now, policy=POLICY)
            got, _ = run_counting(
                expire_steps(sliced, now, policy=POLICY, slice_items=slice_items), slice_items
            )
        else:
            expected = apply_many(one_go, batch, now=now, policy=POLICY)
            got, _ = run_counting(
                apply_many_steps(sliced, batch, now=now, policy=POLICY, slice_items=slice_items),
                slice_items,
            )
        assert got == expected
        one_go, sliced = expected[0], got[0]  # type: ignore[index]


@given(st.lists(events, max_size=6))
@settings(max_examples=50, deadline=None)
def test_unsliced_bound_never_pauses(batch: list[Event]) -> None:
    _, pauses = run_counting(
        apply_many_steps(Catalog(), batch, now=0.0, policy=POLICY, slice_items=10_000),
        10_000,
    )
    assert pauses == 0


def test_a_big_resync_pauses_in_proportion_to_its_size() -> None:
    """2 000 new endpoints at 100 per slice: each endpoint is checked and stored, then re-merged,
    then diffed, so at least 3 x 2 000 / 100 pauses; none larger than the slice."""
    svc = ServiceName("api", "bench")
    eps = tuple(Endpoint(svc, f"10.0.{i >> 8}.{i & 255}", 80) for i in range(2000))
    gen = apply_many_steps(
        Catalog(), [Resynced("consul", eps, "1", 0.0)], now=0.0, policy=POLICY, slice_items=100
    )
    (catalog, diff), pauses = run_counting(gen, 100)  # type: ignore[misc]
    assert len(catalog) == 2000 and len(diff.added) == 2000
    assert pauses >= 60
    # Expiry of the whole source re-merges every endpoint: sliced as well.
    stale, _ = apply_many(catalog, [SourceStale("consul", "down", 0.0)], now=0.0, policy=POLICY)
    (gone, _), pauses = run_counting(  # type: ignore[misc]
        expire_steps(stale, 1e9, policy=POLICY, slice_items=100), 100
    )
    assert len(gone) == 0 and pauses >= 20


def test_slice_bound_must_be_positive() -> None:
    with pytest.raises(ValueError):
        check_slice(0)
