"""The heap keeper: freeze at the end of a slow full GC pass, then reset CPython's schedule."""

from __future__ import annotations

import gc
import math

import pytest
import trio
import trio.lowlevel

from discovery.heap import FULL_PASS_EVERY, HeapKeeper
from discovery.merge import Policy
from discovery.service import serve_catalog
from discovery.snapshot import Catalog
from discovery.watch import Watch


class Fake:
    def __init__(self) -> None:
        self.now = 0.0
        self.calls: list[str] = []

    def keeper(self, budget: float) -> HeapKeeper:
        return HeapKeeper(
            budget,
            clock=lambda: self.now,
            freeze=lambda: self.calls.append("freeze"),
            collect=lambda: self.calls.append("collect"),
        )


def full_pass(keeper: HeapKeeper, fake: Fake, took: float, generation: int = 2) -> None:
    keeper.on_gc("start", {"generation": generation})
    fake.now += took
    keeper.on_gc("stop", {"generation": generation, "collected": 0, "uncollectable": 0})


def test_a_slow_full_pass_freezes_then_tend_collects_once() -> None:
    fake = Fake()
    keeper = fake.keeper(0.005)
    full_pass(keeper, fake, 0.001)
    full_pass(keeper, fake, 0.5, generation=1)  # young passes do not count
    assert fake.calls == [] and not keeper.tend()
    full_pass(keeper, fake, 0.006)
    assert fake.calls == ["freeze"] and keeper.freezes == 1
    assert keeper.tend() and fake.calls == ["freeze", "collect"]
    assert not keeper.tend()  # once per freeze


def test_budget_is_validated_and_inf_disables() -> None:
    with pytest.raises(ValueError):
        HeapKeeper(-1.0)
    with pytest.raises(ValueError):
        HeapKeeper(math.nan)
    with HeapKeeper(math.inf) as keeper:
        assert keeper.on_gc not in gc.callbacks


async def test_the_catalog_service_keeps_the_heap() -> None:
    """serve_catalog installs its keeper for its lifetime and tends it: a real full pass (the
    budget 0 makes every pass 'slow') freezes the heap, and the end of that task step runs the
    reset collection."""
    fake = Fake()
    keeper = fake.keeper(0.0)
    before = gc.get_threshold()
    watch: Watch[Catalog] = Watch(Catalog())
    with trio.fail_after(60):  # hang guard
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda **kw: serve_catalog([], watch, policy=Policy(), heap=keeper, **kw)
            )
            assert keeper.on_gc in gc.callbacks
            assert gc.get_threshold()[2] == FULL_PASS_EVERY
            gc.collect()  # a real full pass, seen through gc.callbacks
            assert fake.calls == ["freeze"]
            await trio.lowlevel.checkpoint()  # the end of this task step tends the keeper
            assert fake.calls == ["freeze", "collect"]
            nursery.cancel_scope.cancel()
    assert keeper.on_gc not in gc.callbacks
    assert gc.get_threshold() == before
