"""A stream whose consumer stalls must never stall its neighbours on the same connection.

The connection window is credited when data is taken off the wire into a stream's buffer;
a stream's own window only when its consumer reads (``overlay.h2.credit``).  Here streams
whose handlers never read fill more than the whole connection window between them; another
stream on the same connection must still move its megabyte, and each stalled stream must
still hold no more than its own window.
"""

from __future__ import annotations

import pytest
import trio

from overlay.h2.limits import H2Limits
from overlay.h2.stream import H2Stream
from tests.overlay.h2.test_h2_connection import POST, h2_pair, read_all

pytestmark = pytest.mark.usefixtures("any_engine")

WINDOW = 65_535
STALLED = 4  # four stream windows: twice the connection window below


async def test_stalled_streams_do_not_stall_their_neighbours(
    autojump_clock: trio.abc.Clock,
) -> None:
    limits = H2Limits(stream_window=WINDOW, connection_window=2 * WINDOW)
    stalled: list[H2Stream] = []
    never = trio.Event()

    async def handler(stream: H2Stream) -> None:
        if stream.request_headers and (b":path", b"/stall") in stream.request_headers:
            stalled.append(stream)
            await never.wait()  # never reads: its buffer fills to its window and stays
            return
        body = await read_all(stream, limit=4 * 1024 * 1024)
        await stream.send_response([(":status", "200")], b"%d" % len(body))

    stall = [(n, b"/stall" if n == ":path" else v) for n, v in POST]
    async with h2_pair(handler, limits=limits) as (client, _server), trio.open_nursery() as nursery:
        for _ in range(STALLED):
            s = await client.open_stream(stall)
            nursery.start_soon(s.send_all, b"s" * WINDOW)
        await trio.sleep(1)  # every stalled stream has sent what its window allows
        with trio.fail_after(30):  # hang guard (virtual time): stuck without the fix
            neighbour = await client.open_stream(POST)
            await neighbour.send_all(b"n" * (1024 * 1024))
            await neighbour.send_eof()
            assert (b":status", b"200") in await neighbour.response_headers()
            assert await read_all(neighbour) == b"%d" % (1024 * 1024)
        assert len(stalled) == STALLED
        for s in stalled:
            buffered = s.statistics().buffered
            assert 0 < buffered <= WINDOW  # the stream window still bounds each buffer
        nursery.cancel_scope.cancel()
