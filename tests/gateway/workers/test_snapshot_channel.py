"""Snapshots over a real Unix socketpair: a worker task syncs, resyncs after a gap."""

from __future__ import annotations

import socket

import trio

from gateway.workers.channel import Channel, channel_from_socket, channel_pair
from gateway.workers.messages import Hello, Resync, Welcome
from gateway.workers.snapshot import (
    SNAPSHOT_MESSAGES,
    NeedResync,
    SnapshotFeed,
    SnapshotReceiver,
    SnapshotVersion,
    clock_base,
)

from .test_snapshot import build, churn, same_catalog


async def worker(channel: Channel, done: trio.MemorySendChannel[SnapshotReceiver]) -> None:
    """What a worker does: hello, take the clock offset, apply snapshots, ask on a gap."""
    await channel.send(Hello(0, 1))
    welcome = await channel.receive()
    assert isinstance(welcome, Welcome)
    rx = SnapshotReceiver(clock_offset=clock_base() - welcome.clock_base)
    while True:
        message = await channel.receive()
        if message == "report":
            await done.send(rx)
            continue
        assert isinstance(message, SNAPSHOT_MESSAGES)
        result = rx.apply(message)
        if isinstance(result, NeedResync):
            await channel.send(Resync(result.reason))


async def test_a_worker_syncs_over_a_socketpair_and_resyncs_after_a_gap() -> None:
    catalog = build(3000)
    feed = SnapshotFeed(catalog=catalog, budget=32 << 10)
    ours, theirs = channel_pair()
    # A hang guard only (the exchange takes well under a second).
    with trio.fail_after(30):
        await exchange(feed, ours, theirs)


async def exchange(feed: SnapshotFeed, ours: Channel, theirs: socket.socket) -> None:
    catalog = feed.catalog.value
    send, receive = trio.open_memory_channel[SnapshotReceiver](1)
    async with ours, trio.open_nursery() as nursery:
        nursery.start_soon(worker, channel_from_socket(theirs), send)
        hello = await ours.receive()
        assert isinstance(hello, Hello)
        await ours.send(Welcome(clock_base()))

        async def sync(version: SnapshotVersion | None) -> SnapshotReceiver:
            for message in feed.messages_for(version):
                await ours.send(message)
            await ours.send("report")
            return await receive.receive()

        rx = await sync(None)
        assert abs(rx.clock_offset) < 1.0  # one process here: (about) zero
        same_catalog(rx.catalog, catalog, rx.clock_offset)
        held = feed.version
        # A step the worker never gets (dropped here), then the next: it asks for a resync.
        feed.publish_catalog(c2 := churn(catalog, range(9), "2"))
        feed.messages_for(held)
        feed.publish_catalog(c3 := churn(c2, range(9, 18), "3"))
        gap = SnapshotVersion(held.epoch, held.catalog + 1, held.imports, held.failing)
        for message in feed.messages_for(gap):
            await ours.send(message)
        resync = await ours.receive()
        assert isinstance(resync, Resync) and "holding" in resync.reason
        rx = await sync(None)
        same_catalog(rx.catalog, c3, rx.clock_offset)
        assert rx.version == feed.version
        assert ours.bytes_sent > 100_000
        nursery.cancel_scope.cancel()
