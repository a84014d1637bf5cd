"""The control channel over a real Unix socketpair: whole frames, EOF, bounds, an fd."""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trio

from discovery.model import EndpointKey, ServiceName
from gateway.workers.channel import (
    Channel,
    ChannelClosed,
    channel_from_fd,
    channel_from_socket,
    channel_pair,
    encode,
)
from gateway.workers.messages import Drain, Failing, Hello, StatsReply


async def test_messages_cross_whole_in_order() -> None:
    ours, theirs = channel_pair()
    peer = channel_from_socket(theirs)
    big = Failing(
        7,
        tuple(
            (EndpointKey(ServiceName("s"), f"10.0.0.{i % 250}", i), "x" * 50) for i in range(50_000)
        ),
    )
    async with ours, peer:
        async with trio.open_nursery() as nursery:
            # Two concurrent senders: the lock keeps every frame whole.
            nursery.start_soon(ours.send, big)
            nursery.start_soon(ours.send, Hello(1, os.getpid()))
            got = [await peer.receive(), await peer.receive()]
        assert sorted(type(m).__name__ for m in got) == ["Failing", "Hello"]
        assert big in got
        await peer.send_encoded(encode(Drain(2.5)))
        assert await ours.receive() == Drain(2.5)
        assert ours.bytes_received == len(encode(Drain(2.5)))


async def test_eof_at_boundary_and_mid_frame_raise_channel_closed() -> None:
    ours, theirs = channel_pair()
    await ours.send(StatsReply(1, {"a": 1}))
    with theirs:
        peer = channel_from_socket(theirs.dup())
        assert await peer.receive() == StatsReply(1, {"a": 1})
    await peer.aclose()
    with pytest.raises(ChannelClosed, match="at a frame boundary"):
        await ours.receive()

    ours2, raw = channel_pair()
    with raw:
        raw.sendall(struct.pack(">I", 100) + b"abc")
        raw.shutdown(socket.SHUT_WR)
        with pytest.raises(ChannelClosed, match="mid-frame"):
            await ours2.receive()
    await ours2.aclose()


async def test_oversized_and_garbage_frames_close_the_channel() -> None:
    ours, raw = channel_pair(max_frame=1024)
    with raw:
        raw.sendall(struct.pack(">I", 4096))
        with pytest.raises(ChannelClosed, match="exceeds max_frame"):
            await ours.receive()
    with pytest.raises(ValueError, match="exceeds max_frame"):
        await ours.send(b"x" * 2048)
    await ours.aclose()

    ours, raw = channel_pair()
    with raw:
        raw.sendall(struct.pack(">I", 5) + b"\x00junk")
        with pytest.raises(ChannelClosed, match="unreadable frame"):
            await ours.receive()
    await ours.aclose()


async def test_send_to_a_closed_peer_raises_channel_closed() -> None:
    ours, theirs = channel_pair()
    theirs.close()
    with pytest.raises(ChannelClosed):
        for _ in range(100):  # the first writes may still land in the socket buffer
            await ours.send(b"x" * 65536)
    await ours.aclose()


async def test_channel_from_fd_takes_an_inherited_fd() -> None:
    ours, theirs = channel_pair()
    peer = channel_from_fd(theirs.detach())
    async with ours, peer:
        await peer.send(Hello(3, 42))
        assert await ours.receive() == Hello(3, 42)
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    with a, b, pytest.raises(ValueError, match="not a stream socket"):
        channel_from_fd(a.fileno())


async def test_concurrent_receivers_are_refused() -> None:
    ours, theirs = channel_pair()
    peer = channel_from_socket(theirs)
    async with ours, peer, trio.open_nursery() as nursery:
        nursery.start_soon(ours.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await ours.receive()
        nursery.cancel_scope.cancel()


def test_channel_rejects_a_bad_bound() -> None:
    a, _b = trio.testing.memory_stream_pair()
    with pytest.raises(ValueError):
        Channel(a, max_frame=0)
