"""What the lean engine keeps beyond the codec: pending window credit, bounded by the streams
that can still send to us."""

from __future__ import annotations

import trio
import trio.testing

from overlay.h2.engine_lean import LeanEngine
from overlay.h2.limits import H2Limits
from overlay.h2.stream import H2Stream
from tests.overlay.h2.test_h2_connection import POST, h2_pair, read_all


async def _echo_after_end(stream: H2Stream) -> None:
    # The whole request (END_STREAM) is in before the body is read: the stream's credit
    # arrives for a stream the peer can no longer send on.
    await trio.testing.wait_all_tasks_blocked()
    assert stream.statistics().remote_ended
    body = await read_all(stream)
    await stream.send_response([(":status", "200")], body)


async def test_pending_stream_credit_is_dropped_once_the_peer_has_ended() -> None:
    limits = H2Limits(engine="lean")
    async with h2_pair(_echo_after_end, limits=limits) as (client, server):
        for i in range(50):
            stream = await client.open_stream(POST)
            await stream.send_all(b"x" * (100 + i))
            await stream.send_eof()
            assert await read_all(stream) == b"x" * (100 + i)
        engine = server._engine
        assert isinstance(engine, LeanEngine)
        assert engine._stream_credit == {}
        assert client.statistics().streams_opened == 50
