"""A stream's receive window on a real connection pair: grows while its consumer keeps up,
falls back when idle, stays small when the gateway-wide budget is spent (and still moves
every byte).  Virtual time (``autojump_clock``): the drain and idle intervals are exact."""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from overlay.h2.buffer_budget import BufferBudget
from overlay.h2.connection import H2Connection, Handler
from overlay.h2.limits import H2Limits
from overlay.h2.stream import H2Stream
from tests.overlay.h2.test_h2_connection import POST

KIB = 1024
MIB = 1024 * KIB
INITIAL = 64 * KIB


def _limits(budget: BufferBudget) -> H2Limits:
    return H2Limits(
        stream_window=INITIAL,
        stream_window_max=1 * MIB,
        connection_window=8 * MIB,
        max_frame_size=64 * KIB,
        max_outbound_buffer=1 * MIB,
        window_budget=budget,
    )


RTT = 0.01  # virtual seconds: 5 ms each way


class _Pipe:
    """One direction of a link with latency: what is sent arrives ``RTT / 2`` later."""

    def __init__(self) -> None:
        self.queue: deque[tuple[float, bytes]] = deque()
        self.lot = trio.lowlevel.ParkingLot()
        self.closed = False


class DelayedStream(trio.abc.Stream):
    def __init__(self, out: _Pipe, into: _Pipe) -> None:
        self._out, self._in = out, into

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        if self._out.closed:
            raise trio.ClosedResourceError
        self._out.queue.append((trio.current_time() + RTT / 2, bytes(data)))
        self._out.lot.unpark_all()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            if self._in.queue:
                at, data = self._in.queue[0]
                if at > trio.current_time():
                    await trio.sleep_until(at)
                    continue
                if max_bytes is not None and len(data) > max_bytes:
                    self._in.queue[0] = (at, data[max_bytes:])
                    data = data[:max_bytes]
                else:
                    self._in.queue.popleft()
                await trio.lowlevel.checkpoint()
                return data
            if self._in.closed:
                await trio.lowlevel.checkpoint()
                return b""
            await self._in.lot.park()

    async def aclose(self) -> None:
        self._out.closed = True
        self._out.lot.unpark_all()
        await trio.lowlevel.checkpoint()


@asynccontextmanager
async def delayed_pair(
    handler: Handler, limits: H2Limits
) -> AsyncIterator[tuple[H2Connection, H2Connection]]:
    """A client and a server connection over a link with ``RTT`` of latency."""
    ab, ba = _Pipe(), _Pipe()
    client = H2Connection(
        DelayedStream(ab, ba), client_side=True, limits=limits, ping_interval=None
    )
    server = H2Connection(
        DelayedStream(ba, ab), client_side=False, handler=handler, limits=limits, ping_interval=None
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        yield client, server
        await client.aclose()
        await server.aclose()


class Upload:
    """Server side: read each stream fully, recording its window after every read."""

    def __init__(self) -> None:
        self.streams: list[H2Stream] = []
        self.windows: dict[int, list[int]] = {}
        self.received: dict[int, bytearray] = {}
        self.ended = trio.Event()

    async def handler(self, stream: H2Stream) -> None:
        self.streams.append(stream)
        windows = self.windows.setdefault(stream.stream_id, [])
        got = self.received.setdefault(stream.stream_id, bytearray())
        while data := await stream.receive_some(64 * KIB):
            got += data
            windows.append(stream.statistics().receive_window)
        await stream.send_response([(":status", "200")], b"%d" % len(got))
        self.ended.set()


def _payload(n: int, seed: int) -> bytes:
    return bytes((i * 31 + seed) % 251 for i in range(256)) * (n // 256)


async def test_window_grows_while_the_consumer_keeps_up_and_shrinks_when_idle(
    autojump_clock: trio.abc.Clock,
) -> None:
    budget = BufferBudget(256 * MIB)
    up = Upload()
    async with delayed_pair(up.handler, _limits(budget)) as (client, _server):
        with trio.fail_after(60):  # hang guard (virtual time)
            stream = await client.open_stream(POST)
            await stream.send_all(_payload(8 * MIB, 1))
            await trio.sleep(RTT)
            windows = up.windows[stream.stream_id]
            assert windows[0] <= 2 * INITIAL and max(windows) == 1 * MIB
            # The one grown window, and the client's own (initial) one for the response.
            assert budget.reserved == 1 * MIB + INITIAL

            await trio.sleep(5)  # idle: well past the policy's idle interval
            # A trickle after the pause: the peer still holds its credit (never revoked), but
            # what it uses comes back only down to the initial window.
            for _ in range((1 * MIB - INITIAL) // (16 * KIB)):
                await stream.send_all(b"t" * (16 * KIB))
                await trio.sleep(0.05)  # a window per 200 ms: no reason to grow again
            (server_stream,) = up.streams
            stats = server_stream.statistics()
            assert stats.receive_window == stats.receive_window_target == INITIAL
            assert budget.reserved == 2 * INITIAL

            await stream.send_eof()
            await up.ended.wait()
            assert len(up.received[stream.stream_id]) == 9 * MIB - INITIAL
        await stream.aclose()
    assert budget.reserved == 0


async def test_past_the_budget_windows_stay_small_and_transfers_complete(
    autojump_clock: trio.abc.Clock,
) -> None:
    budget = BufferBudget(0)  # spent from the start: the initial windows alone overrun it
    up = Upload()
    sent: dict[int, bytes] = {}
    async with delayed_pair(up.handler, _limits(budget)) as (client, _server):
        with trio.fail_after(120):  # hang guard (virtual time)
            async with trio.open_nursery() as nursery:
                for seed in range(3):
                    stream = await client.open_stream(POST)
                    sent[stream.stream_id] = _payload(2 * MIB, seed)

                    async def upload(s: H2Stream = stream) -> None:
                        await s.send_all(sent[s.stream_id])
                        await s.send_eof()
                        await s.response_headers()
                        await s.aclose()

                    nursery.start_soon(upload)
        assert {k: bytes(v) for k, v in up.received.items()} == sent  # byte-exact
        assert all(max(w) <= INITIAL for w in up.windows.values())
        assert budget.growth_refused > 0
    assert budget.reserved == 0


async def test_growth_stops_at_the_budget_across_streams(autojump_clock: trio.abc.Clock) -> None:
    # Three streams, each with a window at both ends (upload and response), and room for
    # exactly one doubling.
    budget = BufferBudget(6 * INITIAL + 64 * KIB)
    up = Upload()
    async with delayed_pair(up.handler, _limits(budget)) as (client, _server):
        with trio.fail_after(120):
            async with trio.open_nursery() as nursery:
                for seed in range(3):
                    stream = await client.open_stream(POST)

                    async def upload(s: H2Stream = stream, seed: int = seed) -> None:
                        await s.send_all(_payload(2 * MIB, seed))
                        await s.send_eof()
                        await s.response_headers()

                    nursery.start_soon(upload)
        # A window grew, the total never went past the budget, and the others were told no
        # while one held the room.  How far one grows depends on which stream ends first (an
        # ended stream gives its share back, and trio picks the order of a batch at random),
        # so the largest window is only bounded by the budget, not fixed.
        largest = max(max(w) for w in up.windows.values())
        assert 2 * INITIAL <= largest < budget.limit
        assert budget.peak <= budget.limit and budget.growth_refused > 0
