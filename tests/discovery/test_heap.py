"""The heap keeper: freeze at the end of a slow full GC pass, then reset CPython's schedule."""

from __future__ import annotations

import gc
import math
import threading

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
        self.collect_threads: list[str] = []
        self.collected: trio.Event | None = None

    def keeper(self, budget: float) -> HeapKeeper:
        return HeapKeeper(
            budget,
            clock=lambda: self.now,
            freeze=lambda: self.calls.append("freeze"),
            collect=self.collect,
        )

    def collect(self) -> None:
        self.calls.append("collect")
        self.collect_threads.append(threading.current_thread().name)
        if self.collected is not None:
            self.collected.set()

    async def settle(self, since: int = 0) -> None:
        """Let the loop run what was handed to it (``run_sync_soon``) until a tend is in
        (after the first ``since`` calls)."""
        if "collect" in self.calls[since:]:
            return
        self.collected = trio.Event()
        with trio.fail_after(10):  # hang guard
            await self.collected.wait()


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
    budget 0 makes every pass 'slow') freezes the heap, and the loop runs the reset collection
    right after."""
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
            # Every pass is 'slow' (budget 0), so CPython's own passes may have come first.
            seen = len(fake.calls)
            gc.collect()  # a real full pass, seen through gc.callbacks
            assert fake.calls[seen:] == ["freeze"]
            await fake.settle(seen)  # the loop tends the keeper between task steps
            assert fake.calls[seen:] == ["freeze", "collect"]
            nursery.cancel_scope.cancel()
    assert keeper.on_gc not in gc.callbacks
    assert gc.get_threshold() == before


async def test_a_pass_in_another_thread_is_tended_by_the_loop_and_no_task_step_pays() -> None:
    """A full pass may run in a worker thread (the Consul decode offload): the reset collection
    still runs in the trio thread.  And the keeper is no trio instrument, so it costs the data
    path's task steps nothing."""
    fake = Fake()
    with fake.keeper(0.0) as keeper:
        assert not isinstance(keeper, trio.abc.Instrument)
        await trio.to_thread.run_sync(gc.collect)
        await fake.settle()
    assert fake.calls == ["freeze", "collect"]
    assert fake.collect_threads == [threading.main_thread().name]


def test_outside_a_trio_run_the_owner_tends() -> None:
    fake = Fake()
    with fake.keeper(0.0) as keeper:
        gc.collect()
        assert fake.calls == ["freeze"]
        assert keeper.tend() and fake.calls == ["freeze", "collect"]
