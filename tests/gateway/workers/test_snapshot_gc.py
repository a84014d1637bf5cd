"""A worker keeps the cyclic GC off the snapshots' objects (gateway/workers/snapshot_gc.py).

Why: unpickling a 100k-endpoint snapshot makes ~400k long-lived objects; left to the cyclic
collector, its next full pass walks them all on the worker's loop (bench_stall --workers 2
measured 220-320 ms stalls, nearly all GC, during a Consul resync and a peer's snapshot).  And
under a churn, the small deltas' objects were walked by young and full passes of 5-27 ms.
"""

from __future__ import annotations

import gc
import socket
import weakref
from collections.abc import Callable, Iterator

import pytest
import trio

from discovery.snapshot import Catalog
from gateway.workers.channel import channel_from_socket
from gateway.workers.messages import CatalogDelta, CatalogPart
from gateway.workers.snapshot import SnapshotFeed, SnapshotReceiver
from gateway.workers.snapshot_gc import after_other, apply_snapshot, before_frame
from tests.gateway.workers.test_snapshot import OFFSET, build, churn, same_catalog


@pytest.fixture
def thawed() -> Iterator[None]:
    """Each test counts what it freezes; the process's heap is put back after."""
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.enable()


def test_a_full_snapshot_is_frozen_out_of_the_collector_and_gc_runs_again(thawed: None) -> None:
    catalog = build(2000)
    messages = SnapshotFeed(catalog=catalog, budget=64 * 1024).messages_for(None)
    parts = [m for m in messages if isinstance(m, CatalogPart)]
    assert len(parts) >= 2  # the catalog comes in several parts
    receiver = SnapshotReceiver(clock_offset=OFFSET)
    apply_snapshot(receiver, parts[0])
    assert not gc.isenabled()  # no collection over a half-built catalog
    for message in messages[1:]:
        apply_snapshot(receiver, message)
    assert gc.isenabled()  # on again after the final part
    same_catalog(receiver.catalog, catalog)
    # The 2000 endpoints' entries (and what holds them) are in the permanent generation.
    assert gc.get_freeze_count() >= 2000


def _through_channel(messages: list[object], on_receive: Callable[[object], object]) -> int:
    """Send ``messages`` over a real channel whose receiving end has the worker's hook; each
    one received is handed to ``on_receive`` before the next is read.  Returns how many."""
    received = 0

    async def main() -> None:
        nonlocal received
        left, right = socket.socketpair()
        sender, receiving = channel_from_socket(left), channel_from_socket(right)
        receiving.on_frame = before_frame
        async with sender, receiving:
            for message in messages:
                await sender.send(message)
                got = await receiving.receive()
                assert not gc.isenabled()  # off before the frame was unpickled
                on_receive(got)
                received += 1

    trio.run(main)
    return received


def _delta(
    base_size: int, ids: range | list[int], budget: int = 256 << 10
) -> tuple[SnapshotReceiver, list[object], Catalog]:
    base = build(base_size)
    feed = SnapshotFeed(catalog=base, budget=budget)
    receiver = SnapshotReceiver(clock_offset=OFFSET)
    for message in feed.messages_for(None):
        apply_snapshot(receiver, message)
    grown = churn(base, ids, "2")
    feed.publish_catalog(grown)
    return receiver, feed.messages_for(receiver.version), grown


def test_a_large_delta_over_the_channel_is_frozen_and_gc_runs_again(thawed: None) -> None:
    """A peer's 100k endpoints reach a worker that keeps up as one large delta, not a whole
    snapshot: the channel's hook turns the GC off before unpickling it, the apply freezes it."""
    receiver, (delta,), grown = _delta(50, range(3000))  # 3000 endpoints: one big delta
    assert isinstance(delta, CatalogDelta)
    gc.unfreeze()
    _through_channel([delta], lambda message: apply_snapshot(receiver, message))
    assert gc.isenabled() and gc.get_freeze_count() > 3000
    same_catalog(receiver.catalog, grown)


def test_a_small_delta_is_frozen_too_so_no_pass_walks_a_churn(thawed: None) -> None:
    """Consul churn: a delta of a few endpoints every few tens of milliseconds.  Each is frozen
    as it is applied, so the collector never walks the catalog's new objects (young passes of
    5-27 ms in a worker under churn, bench_stall --split, when only large frames were)."""
    receiver, (delta,), grown = _delta(2000, range(0, 12))
    assert isinstance(delta, CatalogDelta)
    gc.unfreeze()
    _through_channel([delta], lambda message: apply_snapshot(receiver, message))
    assert gc.isenabled()
    new_entries = [
        entry
        for endpoints in grown.services.values()
        for entry in endpoints.values()
        if entry.endpoint.weight == 7 or entry.endpoint.port > 10_000
    ]
    assert new_entries
    tracked = {id(o) for o in gc.get_objects()}  # what the collector still walks
    received = [
        entry
        for endpoints in receiver.catalog.services.values()
        for entry in endpoints.values()
        if entry.endpoint.weight == 7 or entry.endpoint.port > 10_000
    ]
    assert len(received) == len(new_entries)
    assert not any(id(entry) in tracked for entry in received)  # all of them frozen
    same_catalog(receiver.catalog, grown)


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_cyclic_garbage_made_before_a_snapshot_frame_is_collected_not_frozen(
    thawed: None,
) -> None:
    """The freeze after a change keeps what is alive then for good: the hook collects first,
    so the garbage the requests left since the last change is not kept."""
    receiver, (delta,), _ = _delta(200, range(0, 6))
    gc.unfreeze()
    gc.collect()
    cycle = _Cycle()
    gone = weakref.ref(cycle)
    del cycle  # garbage now, but only the cyclic collector can free it

    _through_channel([delta], lambda message: apply_snapshot(receiver, message))
    assert gc.get_freeze_count() > 0  # the change was frozen
    assert gone() is None  # and the garbage was not, with it


def test_a_delta_in_several_messages_runs_no_collection_until_its_last(thawed: None) -> None:
    """As a full snapshot's parts: no collection walks the half-applied copy between the
    messages (not even the hook's), a message that is no snapshot in between leaves the GC
    off, and the last one freezes what the worker now holds."""
    receiver, msgs, grown = _delta(5000, [*range(0, 2000, 20), *range(1, 61)], budget=4 << 10)
    assert len(msgs) > 2 and all(isinstance(m, CatalogDelta) for m in msgs)
    passes: list[int] = []

    def count(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            passes.append(info["generation"])

    def receive(message: object) -> None:
        apply_snapshot(receiver, message)
        assert isinstance(message, CatalogDelta)
        if not message.final:
            assert not gc.isenabled()
            after_other(changing=True)  # e.g. a stats request between two parts
            assert not gc.isenabled()

    gc.unfreeze()
    gc.callbacks.append(count)
    try:
        sent = _through_channel(msgs, receive)
    finally:
        gc.callbacks.remove(count)
    assert sent == len(msgs)
    assert passes[1:] == []  # the hook's one collection before the first message, no other
    assert gc.isenabled() and gc.get_freeze_count() > 0
    same_catalog(receiver.catalog, grown)
    after_other(changing=False)
    assert gc.isenabled()


def test_a_worker_loop_keeps_the_heap_as_one_process_does() -> None:
    """A peer's snapshot makes objects after the apply's own freeze (the routing view, rebuilt
    in other tasks): the worker's loop runs under a heap keeper, which freezes at the end of a
    slow full pass and tends it right after from the loop, and puts everything back after."""
    import trio

    from discovery.heap import FULL_PASS_EVERY, HeapKeeper
    from gateway.workers.worker_app import keep_heap

    calls: list[str] = []
    collected: list[trio.Event] = []  # the newest is set by the next tend

    def collect() -> None:
        calls.append("collect")
        if collected:
            collected[-1].set()

    keeper = HeapKeeper(
        0.0,  # every full pass is 'slow'
        freeze=lambda: calls.append("freeze"),
        collect=collect,
    )
    before = gc.get_threshold()

    async def main() -> None:
        with keep_heap(keeper):
            assert gc.get_threshold()[2] == FULL_PASS_EVERY
            # CPython's own passes may come before ours (every one is 'slow'): count from here.
            seen = len(calls)
            collected.append(trio.Event())
            gc.collect()  # a real full pass, seen through gc.callbacks
            assert calls[seen:] == ["freeze"]
            with trio.fail_after(10):  # hang guard: the loop tends the keeper soon
                await collected[-1].wait()
            assert calls[seen:] == ["freeze", "collect"]
        done = len(calls)
        gc.collect()
        assert calls[done:] == []  # uninstalled

    trio.run(main)
    assert keeper.on_gc not in gc.callbacks
    assert gc.get_threshold() == before
