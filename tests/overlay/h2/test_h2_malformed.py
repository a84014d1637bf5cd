"""RFC 9113 section 8.1.1: a malformed request or response is a *stream* error.

One caller's bad header block must reset that request only, not every request sharing its
connection -- while a block that fails to decode (the HPACK table is shared) still ends the
connection, and a flood of malformed requests is still stopped.
"""

from __future__ import annotations

import contextlib

import h2.config
import h2.connection
import h2.events
import pytest
import trio
from hyperframe.frame import HeadersFrame

from foundation.errors import H2_ENHANCE_YOUR_CALM, H2_PROTOCOL_ERROR
from overlay.h2.codec.errors import H2_COMPRESSION_ERROR
from overlay.h2.limits import H2Limits
from overlay.h2.stream import H2Stream, StreamReset
from tests.overlay.h2.raw_peer import (
    REQ,
    RawClient,
    goaway_code,
    good_request,
    h2_server,
    wait_closed,
)

pytestmark = pytest.mark.usefixtures("any_engine")

MALFORMED = [
    [*REQ, ("X-Upper", "1")],  # uppercase field name
    [*REQ, ("connection", "keep-alive")],  # connection-specific field
    [(":method", "GET"), (":scheme", "https"), (":authority", "a.b.isthmus")],  # no :path
    [("accept", "*/*"), *REQ],  # pseudo-header after a regular field
    [*REQ, ("te", "gzip")],  # te other than trailers
]


async def _lax_client(port: int) -> RawClient:
    """A raw client that sends whatever it is given (h2 would refuse these blocks)."""
    raw = await RawClient.connect(port)
    raw.h2 = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    raw.h2.initiate_connection()
    await raw.flush()
    return raw


async def test_a_malformed_request_resets_its_stream_only() -> None:
    async with h2_server() as server:
        raw = await _lax_client(server.port)
        bad = []
        for headers in MALFORMED:
            sid = raw.h2.get_next_available_stream_id()
            raw.h2.send_headers(sid, headers, end_stream=True)
            bad.append(sid)
        good = raw.h2.get_next_available_stream_id()
        raw.h2.send_headers(good, REQ, end_stream=True)
        await raw.flush()
        events: list[h2.events.Event] = []
        with trio.fail_after(5):
            while not any(
                isinstance(e, h2.events.StreamEnded) and e.stream_id == good for e in events
            ):
                events += await raw.read_events(h2.events.StreamEnded)
        resets = {e.stream_id: e.error_code for e in events if isinstance(e, h2.events.StreamReset)}
        assert resets == dict.fromkeys(bad, H2_PROTOCOL_ERROR)
        body = b"".join(
            bytes(e.data or b"")
            for e in events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == good
        )
        assert body == b"fine"
        assert goaway_code(events) is None
        [conn] = server.conns
        assert conn.close_reason is None
        assert conn.statistics().premature_resets == len(bad)


async def test_malformed_trailers_reset_that_stream_and_fail_its_handler() -> None:
    seen: list[BaseException] = []
    failed = trio.Event()

    async def read_then_answer(stream: H2Stream) -> None:
        try:
            while await stream.receive_some():
                pass
        except StreamReset as exc:
            seen.append(exc)
            failed.set()
            raise
        await stream.send_headers([(":status", "200")], end_stream=True)

    async with h2_server(read_then_answer) as server:
        raw = await _lax_client(server.port)
        post = [(":method", "POST"), *REQ[1:]]
        raw.h2.send_headers(1, post)
        raw.h2.send_data(1, b"body")
        raw.h2.send_headers(1, [(":status", "200")], end_stream=True)  # pseudo in trailers
        raw.h2.send_headers(3, REQ, end_stream=True)
        await raw.flush()
        events: list[h2.events.Event] = []
        with trio.fail_after(5):
            while not any(
                isinstance(e, h2.events.StreamEnded) and e.stream_id == 3 for e in events
            ):
                events += await raw.read_events(h2.events.StreamEnded)
        resets = [e for e in events if isinstance(e, h2.events.StreamReset)]
        assert [(e.stream_id, e.error_code) for e in resets] == [(1, H2_PROTOCOL_ERROR)]
        assert goaway_code(events) is None
        with trio.fail_after(5):
            await failed.wait()
        assert isinstance(seen[0], StreamReset)


async def test_a_block_that_does_not_decode_still_ends_the_connection(any_engine: str) -> None:
    async with h2_server() as server:
        raw = await _lax_client(server.port)
        raw.h2.send_headers(1, [(":method", "POST"), *REQ[1:]])  # open, body to follow
        await raw.flush()
        # Trailers on that open stream whose HPACK index is far past both tables: the shared
        # decoder state cannot be trusted, so this is not one stream's problem.
        trailers = HeadersFrame(1, data=b"\xff\xff\x7f", flags=["END_STREAM", "END_HEADERS"])
        await raw.sock.send_all(trailers.serialize())
        events = await raw.read_events(h2.events.ConnectionTerminated)
        # RFC 9113 4.3 asks for COMPRESSION_ERROR; h2 answers PROTOCOL_ERROR.
        code = H2_PROTOCOL_ERROR if any_engine == "h2" else H2_COMPRESSION_ERROR
        assert goaway_code(events) == code
        reason = await wait_closed(server.conns[0])
        assert reason.error_code == code


async def test_a_flood_of_malformed_requests_is_stopped() -> None:
    limits = H2Limits(max_premature_resets=20)
    async with h2_server(limits=limits) as server:
        raw = await _lax_client(server.port)
        with contextlib.suppress(trio.BrokenResourceError), trio.fail_after(5):
            for _ in range(10):
                for _ in range(10):
                    sid = raw.h2.get_next_available_stream_id()
                    raw.h2.send_headers(sid, MALFORMED[0], end_stream=True)
                await raw.flush()
                await trio.sleep(0.005)
        flooded = server.conns[0]
        reason = await wait_closed(flooded)
        assert reason.error_code == H2_ENHANCE_YOUR_CALM
        assert flooded.statistics().premature_resets == limits.max_premature_resets + 1
        assert await good_request(server.port) == b"fine"
