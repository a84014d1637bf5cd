"""A worker keeps the cyclic GC off a full snapshot's objects.

Why: unpickling a 100k-endpoint snapshot makes ~400k long-lived objects; left to the cyclic
collector, its next full pass walks them all on the worker's loop (bench_stall --workers 2
measured 220-320 ms stalls, nearly all GC, during a Consul resync and a peer's snapshot).
"""

from __future__ import annotations

import gc

from gateway.workers.messages import CatalogPart
from gateway.workers.snapshot import SnapshotFeed, SnapshotReceiver
from gateway.workers.worker_app import apply_snapshot
from tests.gateway.workers.test_snapshot import OFFSET, build, same_catalog


def test_a_full_snapshot_is_frozen_out_of_the_collector_and_gc_runs_again() -> None:
    catalog = build(2000)
    messages = SnapshotFeed(catalog=catalog, budget=64 * 1024).messages_for(None)
    parts = [m for m in messages if isinstance(m, CatalogPart)]
    assert len(parts) >= 2  # the catalog comes in several parts
    receiver = SnapshotReceiver(clock_offset=OFFSET)
    gc.unfreeze()
    try:
        apply_snapshot(receiver, parts[0])
        assert not gc.isenabled()  # no collection over a half-built catalog
        for message in messages[1:]:
            apply_snapshot(receiver, message)
        assert gc.isenabled()  # on again after the final part
        same_catalog(receiver.catalog, catalog)
        # The 2000 endpoints' entries (and what holds them) are in the permanent generation.
        assert gc.get_freeze_count() >= 2000
    finally:
        gc.unfreeze()
        gc.enable()


def test_a_large_delta_over_the_channel_is_frozen_and_gc_runs_again() -> None:
    """A peer's 100k endpoints reach a worker that keeps up as one large delta, not a whole
    snapshot: the channel turns the GC off before unpickling it, the apply freezes it."""
    import socket

    import trio

    from gateway.workers.channel import channel_from_socket
    from gateway.workers.messages import CatalogDelta
    from gateway.workers.worker_app import gc_off_for_large_frames
    from tests.gateway.workers.test_snapshot import churn

    base = build(50)
    feed = SnapshotFeed(catalog=base)
    receiver = SnapshotReceiver(clock_offset=OFFSET)
    for message in feed.messages_for(None):
        apply_snapshot(receiver, message)
    grown = churn(base, range(3000), "2")  # 3000 endpoints changed: one big delta
    feed.publish_catalog(grown)
    (delta,) = feed.messages_for(receiver.version)
    assert isinstance(delta, CatalogDelta)

    async def main() -> None:
        left, right = socket.socketpair()
        sender, receiving = channel_from_socket(left), channel_from_socket(right)
        receiving.large_frame_bytes = 1024
        gc_off_for_large_frames(receiving)
        async with sender, receiving:
            await sender.send(delta)
            message = await receiving.receive()
            assert not gc.isenabled()  # off before the frame was unpickled
            large = receiving.last_frame_bytes >= receiving.large_frame_bytes
            apply_snapshot(receiver, message, large=large)

    gc.unfreeze()
    try:
        trio.run(main)
        assert gc.isenabled() and gc.get_freeze_count() > 3000
        same_catalog(receiver.catalog, grown)
    finally:
        gc.unfreeze()
        gc.enable()


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


def test_a_delta_in_several_messages_keeps_the_gc_off_until_its_last() -> None:
    """As a full snapshot's parts: no collection walks the half-applied copy between the
    messages, and the last one freezes what the worker now holds."""
    from gateway.workers.messages import CatalogDelta
    from tests.gateway.workers.test_snapshot import churn

    base = build(5000)
    feed = SnapshotFeed(catalog=base, budget=4 << 10)
    receiver = SnapshotReceiver(clock_offset=OFFSET)
    for message in feed.messages_for(None):
        apply_snapshot(receiver, message)
    grown = churn(base, [*range(0, 2000, 20), *range(1, 61)], "2")
    feed.publish_catalog(grown)
    msgs = feed.messages_for(receiver.version)
    assert len(msgs) > 2 and all(isinstance(m, CatalogDelta) for m in msgs)
    gc.unfreeze()
    try:
        for message in msgs[:-1]:
            apply_snapshot(receiver, message)
            assert not gc.isenabled()
        apply_snapshot(receiver, msgs[-1])
        assert gc.isenabled() and gc.get_freeze_count() > 0
        same_catalog(receiver.catalog, grown)
    finally:
        gc.unfreeze()
        gc.enable()
