"""Limits and abuse: refused streams, Rapid Reset, control-frame floods, CONTINUATION floods,
oversize header lists -- each against a real H2Connection server on loopback TCP, driven by a
raw h2 client that behaves badly on purpose, while a well-behaved client keeps being served.
"""

from __future__ import annotations

import contextlib

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import hpack
import pytest
import trio
from hyperframe.frame import ContinuationFrame, HeadersFrame, WindowUpdateFrame

from foundation.errors import H2_ENHANCE_YOUR_CALM, H2_REFUSED_STREAM
from overlay.h2.limits import H2Limits, WindowCounter
from overlay.h2.stream import H2Stream
from tests.overlay.h2.raw_peer import (
    REQ,
    RawClient,
    answer,
    goaway_code,
    good_request,
    h2_server,
    wait_closed,
)

pytestmark = pytest.mark.usefixtures("any_engine")


class _Overreaching(h2.connection.H2Connection):
    """An h2 client that ignores the server's MAX_CONCURRENT_STREAMS."""

    @property
    def open_outbound_streams(self) -> int:
        return 0


@pytest.mark.parametrize("settled", [False, True])
async def test_streams_over_the_limit_are_refused_not_fatal(settled: bool) -> None:
    """``settled``: the client has taken (and acknowledged) the server's SETTINGS first, so
    the limit is in force on both sides (the lean codec then refuses the excess itself)."""
    release = trio.Event()

    async def hold(stream: H2Stream) -> None:
        await release.wait()
        await answer(stream)

    limits = H2Limits(max_concurrent_streams=10)
    async with h2_server(hold, limits) as server:
        raw = await RawClient.connect(server.port)
        if settled:
            await raw.flush()
            await raw.read_events(h2.events.RemoteSettingsChanged)
            raw.h2.ping(b"settled!")  # answered after our SETTINGS ACK was taken
            await raw.flush()
            await raw.read_events(h2.events.PingAckReceived)
            raw.h2.__class__ = _Overreaching  # now knows the limit: make it go past it
        # 13 requests (before reading the server's SETTINGS unless settled): 3 over the limit.
        for i in range(13):
            sid = 1 + 2 * i
            raw.h2.send_headers(sid, REQ, end_stream=True)
        await raw.flush()
        events = await raw.read_events(h2.events.StreamReset)
        with trio.fail_after(5):
            while sum(isinstance(e, h2.events.StreamReset) for e in events) < 3:
                events += await raw.read_events(h2.events.StreamReset)
        refused = [e for e in events if isinstance(e, h2.events.StreamReset)]
        assert [e.stream_id for e in refused] == [21, 23, 25]
        assert all(e.error_code == H2_REFUSED_STREAM for e in refused)
        assert goaway_code(events) is None
        release.set()
        ended = await raw.read_events(h2.events.StreamEnded)
        assert any(isinstance(e, h2.events.StreamEnded) for e in ended)
        [conn] = server.conns
        assert conn.statistics().streams_refused == 3
        assert conn.close_reason is None


@pytest.mark.parametrize("variant", ["rapid-reset", "made-you-reset"])
async def test_rapid_reset_closes_the_connection_but_not_others(variant: str) -> None:
    """Rapid Reset: the client resets each stream right after opening it.  MadeYouReset: the
    client makes the *server* reset each stream (here: a stream WINDOW_UPDATE that overflows
    the window, a stream-level FLOW_CONTROL_ERROR).  Both cost the server work per stream
    while never holding a concurrency slot; both are counted as premature resets."""
    limits = H2Limits(max_premature_resets=50)
    async with h2_server(limits=limits) as server:
        assert await good_request(server.port) == b"fine"
        raw = await RawClient.connect(server.port)
        sent = 0
        with contextlib.suppress(trio.BrokenResourceError), trio.fail_after(5):
            while sent < 5000:  # HEADERS immediately followed by the reset, in batches
                extra = b""
                for _ in range(100):
                    sid = raw.h2.get_next_available_stream_id()
                    raw.h2.send_headers(sid, REQ, end_stream=True)
                    if variant == "rapid-reset":
                        raw.h2.reset_stream(sid)
                    else:
                        # h2 would refuse to send this; frame it by hand (after the HEADERS).
                        raw.h2.streams.pop(sid)
                        overflow = WindowUpdateFrame(sid, window_increment=2**31 - 1)
                        extra += raw.h2.data_to_send() + overflow.serialize()
                    sent += 1
                await raw.sock.send_all(extra + raw.h2.data_to_send())
                await trio.sleep(0.005)
        events = await raw.read_events(h2.events.ConnectionTerminated)
        flooded = server.conns[1]
        reason = await wait_closed(flooded)
        assert reason.error_code == H2_ENHANCE_YOUR_CALM
        assert goaway_code(events) in (H2_ENHANCE_YOUR_CALM, None)  # None: RST beat the read
        # Closed at the first reset over budget: nothing after it was even looked at.
        assert flooded.statistics().premature_resets == limits.max_premature_resets + 1
        # A second client on another connection is still served.
        for _ in range(3):
            assert await good_request(server.port) == b"fine"


UNKNOWN_FRAME = b"\x00\x00\x00\xfa\x00\x00\x00\x00\x00"  # type 0xfa, empty, stream 0


@pytest.mark.parametrize("kind", ["ping", "settings", "empty-data", "priority", "unknown"])
async def test_control_frame_floods_close_the_connection(kind: str) -> None:
    limits = H2Limits(max_control_frames=200)
    async with h2_server(limits=limits) as server:
        raw = await RawClient.connect(server.port)
        if kind == "empty-data":
            raw.h2.send_headers(1, [(":method", "POST"), *REQ[1:]])
        sent = 0
        try:
            with trio.fail_after(5):
                while sent < 10_000:  # the client never reads: the server must not buffer
                    for _ in range(100):
                        if kind == "ping":
                            raw.h2.ping(sent.to_bytes(8, "big"))
                        elif kind == "settings":
                            raw.h2.update_settings({h2.settings.SettingCodes.ENABLE_PUSH: 0})
                        elif kind == "priority":
                            raw.h2.prioritize(1 + 2 * (sent % 50), weight=16)
                        elif kind == "unknown":
                            await raw.flush()
                            await raw.sock.send_all(UNKNOWN_FRAME)
                        else:
                            raw.h2.send_data(1, b"")
                        sent += 1
                    await raw.flush()
        except (trio.BrokenResourceError, h2.exceptions.ProtocolError):
            pass  # the server hung up on us: expected
        [conn] = server.conns
        reason = await wait_closed(conn)
        assert reason.error_code == H2_ENHANCE_YOUR_CALM
        stats = conn.statistics()
        assert stats.control_frames == limits.max_control_frames + 1
        assert stats.abuse_goaway  # counted as an abuse GOAWAY for the link metrics
        assert stats.max_outbound_buffered <= 2 * limits.max_outbound_buffer + limits.read_size
        assert await good_request(server.port) == b"fine"


async def test_continuation_flood_is_bounded() -> None:
    async with h2_server() as server:
        raw = await RawClient.connect(server.port)
        await raw.flush()
        block = hpack.Encoder().encode(REQ)
        head = HeadersFrame(1, data=block[:5])  # no END_HEADERS: CONTINUATION must follow
        frames = [head.serialize()]
        frames += [ContinuationFrame(1, data=b"").serialize() for _ in range(1000)]
        with pytest.raises(trio.BrokenResourceError), trio.fail_after(5):
            for f in frames:
                await raw.sock.send_all(f)
            await trio.sleep(5)  # pragma: no cover - the server must have hung up by now
        [conn] = server.conns
        await wait_closed(conn)
        assert conn.statistics().bytes_received < 64 * 1024
        assert await good_request(server.port) == b"fine"


@pytest.mark.parametrize("shape", ["block-over-twice-the-limit", "hpack-bomb"])
async def test_oversize_header_list_is_rejected(shape: str) -> None:
    """Both a header block over twice the list limit before decoding (140 KB) and an HPACK
    bomb (one 4 KiB entry put in the dynamic table, then referenced by a one-byte index a
    hundred times: ~4 KiB on the wire, ~400 KiB decoded: over four times the limit) are
    refused without being decoded in full, under the 64 KiB default.  (A list merely over the
    limit is decoded and refused alone: 431, see test_h2_bounds.py.)"""
    async with h2_server() as server:
        raw = await RawClient.connect(server.port)
        if shape == "block-over-twice-the-limit":
            headers = [*REQ, ("x-big", "v" * 140_000)]
        else:
            headers = [*REQ] + [("x-bomb", "b" * 4000)] * 100
        await raw.flush()  # preface and SETTINGS
        # Encode without Huffman (pure-Python Huffman of 100 KB is slow) and frame by hand.
        block = hpack.Encoder().encode(headers, huffman=False)
        pieces = [block[i : i + 16384] for i in range(0, len(block), 16384)]
        frames = [HeadersFrame(1, data=pieces[0], flags=["END_STREAM"])]
        frames += [ContinuationFrame(1, data=p) for p in pieces[1:]]
        frames[-1].flags.add("END_HEADERS")
        await raw.sock.send_all(b"".join(f.serialize() for f in frames))
        events = await raw.read_events(h2.events.ConnectionTerminated)
        assert not any(isinstance(e, h2.events.ResponseReceived) for e in events)
        [conn] = server.conns
        reason = await wait_closed(conn)
        assert reason.error_code == H2_ENHANCE_YOUR_CALM
        if shape == "hpack-bomb":
            assert conn.statistics().bytes_received < 8 * 1024  # small on the wire
        assert conn.statistics().streams_opened == 0
        assert await good_request(server.port) == b"fine"


def test_window_counter_is_per_window() -> None:
    c = WindowCounter(window=10.0, limit=3, start=0.0)
    over = False
    for t in (0.0, 1.0, 2.0):
        c, over = c.record(t)
    assert not over
    c, over = c.record(3.0)
    assert over  # 4 in one window
    c, over = c.record(10.5)  # new window
    assert not over and c.count == 1 and c.start == 10.5


def test_limits_are_validated() -> None:
    H2Limits()
    for bad in ({"max_concurrent_streams": 0}, {"stream_window": 2**31}, {"flood_window": 0}):
        with pytest.raises(ValueError):
            H2Limits(**bad)  # type: ignore[arg-type]
