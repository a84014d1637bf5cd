"""splice: both directions, half-close, bounded in-flight data, idle timeout."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from gateway.relay import SpliceIdle, splice


async def test_copies_both_ways_and_propagates_half_close() -> None:
    client, gw_a = trio.testing.memory_stream_pair()
    gw_b, server = trio.testing.memory_stream_pair()
    async with trio.open_nursery() as nursery:
        result: list[object] = []

        async def run() -> None:
            result.append(await splice(gw_a, gw_b))

        nursery.start_soon(run)
        await client.send_all(b"hello ")
        await client.send_all(b"world")
        await client.send_eof()
        got = b""
        while True:
            piece = await server.receive_some()
            if not piece:
                break
            got += piece
        assert got == b"hello world"
        # The other direction still flows after the client's EOF.
        await server.send_all(b"reply")
        assert await client.receive_some() == b"reply"
        await server.send_eof()
        assert await client.receive_some() == b""
    stats = result[0]
    assert stats.a_to_b == 11 and stats.b_to_a == 5  # type: ignore[attr-defined]


async def test_a_slow_reader_stalls_the_writer() -> None:
    """With a reader that takes nothing, the splice holds at most one piece in flight."""
    client, gw_a = trio.testing.lockstep_stream_pair()
    gw_b, server = trio.testing.lockstep_stream_pair()
    sent = 0
    async with trio.open_nursery() as nursery:
        nursery.start_soon(splice, gw_a, gw_b)

        async def writer() -> None:
            nonlocal sent
            for _ in range(100):
                await client.send_all(b"x" * 1024)
                sent += 1024

        nursery.start_soon(writer)
        await trio.sleep(0.5)
        # Lockstep streams have no buffer: nothing moves until the server reads.
        assert sent <= 2 * 1024
        got = 0
        while got < 100 * 1024:
            got += len(await server.receive_some(4096))
        nursery.cancel_scope.cancel()


async def test_idle_timeout(autojump_clock: trio.abc.Clock) -> None:
    _client, gw_a = trio.testing.memory_stream_pair()
    gw_b, _server = trio.testing.memory_stream_pair()
    start = trio.current_time()
    with pytest.raises(BaseExceptionGroup) as info:
        await splice(gw_a, gw_b, idle_timeout=30.0)
    assert info.group_contains(SpliceIdle)
    assert trio.current_time() - start == pytest.approx(30.0)


async def test_read_size_bounds_each_piece_in_flight() -> None:
    """``read_size`` (config ``limits.tunnel_buffer_bytes``) is the most a direction holds."""
    client, gw_a = trio.testing.memory_stream_pair()
    gw_b, server = trio.testing.memory_stream_pair()
    writes: list[int] = []
    send_all = gw_b.send_all

    async def recording_send_all(data: bytes | bytearray | memoryview) -> None:
        writes.append(len(data))
        await send_all(data)

    gw_b.send_all = recording_send_all  # type: ignore[method-assign]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: splice(gw_a, gw_b, read_size=10))
        await client.send_all(b"x" * 95)
        await client.send_eof()
        got = 0
        while piece := await server.receive_some():
            got += len(piece)
        nursery.cancel_scope.cancel()
    assert got == 95 and sum(writes) == 95 and max(writes) <= 10
