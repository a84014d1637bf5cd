"""On a link, resets the peer sends are its callers' (forwarded), never the peer's own abuse.

A link runs with ``count_peer_resets=False``: the origin gateway holds each caller to its own
budget on the caller's connection, so a flood of RST_STREAM from the peer gateway must not close
the link.  What the peer gateway itself gets wrong (streams we must reset because of it: the
MadeYouReset shape) still counts, and still closes the connection past the budget.
"""

from __future__ import annotations

import contextlib

import h2.events
import pytest
import trio
from hyperframe.frame import WindowUpdateFrame

from foundation.errors import H2_ENHANCE_YOUR_CALM
from overlay.h2.limits import H2Limits
from tests.overlay.h2.raw_peer import REQ, RawClient, good_request, h2_server, wait_closed

pytestmark = pytest.mark.usefixtures("any_engine")

LINK = H2Limits(max_premature_resets=50, count_peer_resets=False)


async def _flood(port: int, *, forwarded: bool, total: int = 1000) -> RawClient:
    """Open ``total`` streams, each reset at once: by the client (forwarded) or made to be
    reset by the server (an overflowing stream WINDOW_UPDATE, the client's own fault)."""
    raw = await RawClient.connect(port)
    sent = 0
    with contextlib.suppress(trio.BrokenResourceError), trio.fail_after(10):
        while sent < total:
            extra = b""
            for _ in range(50):
                sid = raw.h2.get_next_available_stream_id()
                raw.h2.send_headers(sid, REQ, end_stream=True)
                if forwarded:
                    raw.h2.reset_stream(sid)
                else:
                    raw.h2.streams.pop(sid)
                    overflow = WindowUpdateFrame(sid, window_increment=2**31 - 1)
                    extra += raw.h2.data_to_send() + overflow.serialize()
                sent += 1
            await raw.sock.send_all(extra + raw.h2.data_to_send())
            await trio.sleep(0.005)
    return raw


async def test_a_flood_of_forwarded_resets_never_closes_a_link() -> None:
    async with h2_server(limits=LINK) as server:
        raw = await _flood(server.port, forwarded=True)
        # The connection still serves a request after twenty budgets' worth of resets.
        sid = raw.h2.get_next_available_stream_id()
        raw.h2.send_headers(sid, REQ, end_stream=True)
        await raw.flush()
        with trio.fail_after(10):  # hang guard
            events = await raw.read_events(h2.events.StreamEnded)
            while not any(isinstance(e, h2.events.StreamEnded) for e in events):
                events += await raw.read_events(h2.events.StreamEnded)
        [conn] = server.conns
        assert conn.close_reason is None
        assert conn.statistics().premature_resets == 0


async def test_what_the_peer_gateway_itself_gets_wrong_still_counts() -> None:
    async with h2_server(limits=LINK) as server:
        assert await good_request(server.port) == b"fine"
        await _flood(server.port, forwarded=False)
        flooded = server.conns[1]
        reason = await wait_closed(flooded)
        assert reason.error_code == H2_ENHANCE_YOUR_CALM
        assert flooded.statistics().premature_resets == LINK.max_premature_resets + 1
