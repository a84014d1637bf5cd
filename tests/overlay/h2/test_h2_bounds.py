"""HTTP/2 bounds that act at the exact frame: CONTINUATION and header-block bounds of our own
(inside h2's backstop of 64), budgets enforced frame by frame within one read, and a request
over the header list limit refused alone with 431.

Each test drives a real ``H2Connection`` server over an in-memory stream pair, so a whole
attack arrives in *one* read (deterministically) and the bytes the server sends back are read
by a plain h2 client: the GOAWAY's last stream ID and the answers in front of it say which
frames the server processed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import hpack
import pytest
import trio
import trio.testing
from hyperframe.frame import ContinuationFrame, HeadersFrame, RstStreamFrame

from foundation.errors import H2_ENHANCE_YOUR_CALM, H2_NO_ERROR
from overlay.h2.connection import H2Connection
from overlay.h2.limits import H2Limits
from overlay.h2.stream import H2Stream, StreamReset

pytestmark = pytest.mark.usefixtures("any_engine")

REQ = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"a.b")]


@dataclass
class Served:
    conn: H2Connection
    peer: trio.abc.Stream
    handled: list[int] = field(default_factory=list)


@asynccontextmanager
async def served(limits: H2Limits) -> AsyncIterator[Served]:
    """An H2Connection server on one end of a memory stream pair; the test has the other."""
    ours, theirs = trio.testing.memory_stream_pair()
    handled: list[int] = []

    async def answer(stream: H2Stream) -> None:
        handled.append(stream.stream_id)
        await stream.send_headers([(b":status", b"200")])
        await stream.send_all(b"fine")
        await stream.send_eof()

    conn = H2Connection(
        theirs, client_side=False, handler=answer, limits=limits, ping_interval=None
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.serve)
        yield Served(conn, ours, handled)
        nursery.cancel_scope.cancel()


def raw_client() -> h2.connection.H2Connection:
    client = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    client.initiate_connection()
    return client


async def read_until(
    s: Served, client: h2.connection.H2Connection, done: type | None
) -> list[h2.events.Event]:
    """Events from the server until one of type ``done`` (or EOF / GOAWAY); hang-guarded."""
    events: list[h2.events.Event] = []
    with trio.fail_after(5):
        while True:
            data = await s.peer.receive_some(65536)
            if not data:
                return events
            got = client.receive_data(data)
            events += got
            if any(isinstance(e, h2.events.ConnectionTerminated) for e in got):
                return events
            if done is not None and any(isinstance(e, done) for e in got):
                return events
            await s.peer.send_all(client.data_to_send())


def goaway(events: list[h2.events.Event]) -> h2.events.ConnectionTerminated:
    [event] = [e for e in events if isinstance(e, h2.events.ConnectionTerminated)]
    return event


# ---------------------------------------------------------------------------------------------
# Budgets act at the frame that crosses them
# ---------------------------------------------------------------------------------------------


async def test_frames_after_the_rapid_reset_that_crosses_the_budget_are_not_processed() -> None:
    limits = H2Limits(max_premature_resets=10)
    async with served(limits) as s:
        client = raw_client()
        for i in range(15):  # Rapid Reset: HEADERS then RST_STREAM, all in one write
            client.send_headers(1 + 2 * i, REQ, end_stream=True)
            client.reset_stream(1 + 2 * i)
        for i in range(15, 20):  # then plain requests
            client.send_headers(1 + 2 * i, REQ, end_stream=True)
        wire = client.data_to_send()
        assert len(wire) < limits.read_size  # one read
        await s.peer.send_all(wire)
        events = await read_until(s, client, None)
        crossing = 1 + 2 * limits.max_premature_resets  # the 11th reset: stream 21
        end = goaway(events)
        assert end.error_code == H2_ENHANCE_YOUR_CALM
        # Nothing after the crossing RST_STREAM reached h2: it opened no stream past it.
        assert end.last_stream_id == crossing
        assert s.conn.statistics().premature_resets == limits.max_premature_resets + 1
        assert all(sid <= crossing for sid in s.handled)
        assert not any(isinstance(e, h2.events.ResponseReceived) for e in events)


async def test_pings_after_the_one_that_crosses_the_control_budget_get_no_answer() -> None:
    limits = H2Limits(max_control_frames=20)
    async with served(limits) as s:
        client = raw_client()  # its SETTINGS is control frame 1
        for i in range(40):
            client.ping(i.to_bytes(8, "big"))
        await s.peer.send_all(client.data_to_send())
        events = await read_until(s, client, None)
        acks = [e for e in events if isinstance(e, h2.events.PingAckReceived)]
        # The SETTINGS and 19 PINGs are within budget, the 20th PING crosses it (h2 has
        # answered that one); the 20 after it are never looked at.
        assert len(acks) == limits.max_control_frames
        assert [int.from_bytes(a.ping_data, "big") for a in acks] == list(range(20))
        assert goaway(events).error_code == H2_ENHANCE_YOUR_CALM
        assert s.conn.statistics().control_frames == limits.max_control_frames + 1


# ---------------------------------------------------------------------------------------------
# Header blocks: CONTINUATION count and raw size, our own bounds
# ---------------------------------------------------------------------------------------------


def fragmented_request(stream_id: int, pieces: int, *, end_headers: bool = True) -> bytes:
    """A valid request header block cut into ``pieces`` frames (HEADERS + CONTINUATIONs)."""
    block = hpack.Encoder().encode([*REQ, (b"x-pad", b"p" * 200)], huffman=False)
    step = -(-len(block) // pieces)
    parts = [block[i * step : (i + 1) * step] for i in range(pieces)]
    frames = [HeadersFrame(stream_id, data=parts[0], flags=["END_STREAM"])]
    frames += [ContinuationFrame(stream_id, data=p) for p in parts[1:]]
    if end_headers:
        frames[-1].flags.add("END_HEADERS")
    return b"".join(f.serialize() for f in frames)


async def test_a_header_block_of_sixteen_continuations_is_served() -> None:
    async with served(H2Limits()) as s:
        client = raw_client()
        await s.peer.send_all(client.data_to_send() + fragmented_request(1, 17))
        # The client's h2 never saw stream 1 open (framed by hand): look at the raw bytes.
        data = b""
        with trio.fail_after(5):
            while b"fine" not in data:
                data += await s.peer.receive_some(65536)
        assert s.handled == [1]
        assert s.conn.close_reason is None


async def test_a_seventeenth_continuation_closes_the_connection_at_that_frame() -> None:
    limits = H2Limits()
    async with served(limits) as s:
        client = raw_client()
        wire = client.data_to_send() + fragmented_request(1, limits.max_continuation_frames + 2)
        wire += RstStreamFrame(1).serialize()  # after the crossing frame: never looked at
        await s.peer.send_all(wire)
        events = await read_until(s, client, None)
        end = goaway(events)
        assert end.error_code == H2_ENHANCE_YOUR_CALM
        assert end.last_stream_id == 0  # the block was refused before it opened a stream
        assert s.handled == [] and s.conn.statistics().streams_opened == 0


async def test_a_header_block_over_twice_the_list_limit_is_refused_before_it_ends() -> None:
    """The raw bound acts as the fragments arrive: no END_HEADERS is ever sent here, and
    under h2's own rules the server would keep buffering (up to 64 CONTINUATION frames)."""
    limits = H2Limits(max_header_list_size=4096)
    async with served(limits) as s:
        client = raw_client()
        frames = [HeadersFrame(1, data=b"\x00" * 1000)]
        frames += [ContinuationFrame(1, data=b"\x00" * 1000) for _ in range(10)]  # 11 000 bytes
        await s.peer.send_all(client.data_to_send() + b"".join(f.serialize() for f in frames))
        events = await read_until(s, client, None)
        assert goaway(events).error_code == H2_ENHANCE_YOUR_CALM
        reason = str(s.conn.close_reason)  # (engines word it apart)
        assert "header block" in reason and "than 8192 bytes" in reason


# ---------------------------------------------------------------------------------------------
# A list over the limit that decoded whole: 431 on its stream, the connection carries on
# ---------------------------------------------------------------------------------------------


async def test_request_over_the_header_list_limit_gets_431_and_the_next_one_is_served() -> None:
    """The oversize block adds 700 entries to the HPACK dynamic table on its way; the request
    after it is encoded against that table, so it is only understood if the server decoded
    the oversize block whole (the table shared by every stream stayed in step)."""
    limits = H2Limits(max_header_list_size=64 * 1024)
    async with served(limits) as s:
        client = raw_client()
        big = [*REQ] + [(b"x-h%d" % i, b"v" * 100) for i in range(700)]  # ~96 KB decoded
        client.send_headers(1, big, end_stream=False)  # a body would follow: RST NO_ERROR
        client.send_headers(3, [*REQ, (b"x-h699", b"v" * 100)], end_stream=True)
        await s.peer.send_all(client.data_to_send())
        events: list[h2.events.Event] = []
        with trio.fail_after(5):
            while not any(
                isinstance(e, h2.events.StreamEnded) and e.stream_id == 3 for e in events
            ):
                events += await read_until(s, client, h2.events.StreamEnded)
        responses = {
            e.stream_id: dict(e.headers)
            for e in events
            if isinstance(e, h2.events.ResponseReceived)
        }
        assert responses[1][b":status"] == b"431"
        assert responses[3][b":status"] == b"200"
        body_1 = b"".join(
            bytes(e.data)
            for e in events
            if isinstance(e, h2.events.DataReceived) and e.stream_id == 1
        )
        assert body_1.startswith(b"431 Request Header Fields Too Large")
        resets = [
            (e.stream_id, e.error_code) for e in events if isinstance(e, h2.events.StreamReset)
        ]
        assert resets == [(1, H2_NO_ERROR)]
        assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in events)
        assert s.handled == [3]
        assert s.conn.close_reason is None
        assert s.conn.statistics().premature_resets == 1


async def test_a_response_over_the_header_list_limit_resets_its_stream_only() -> None:
    """Client role: an oversize response head that decoded whole fails its stream (the origin
    answers its caller 502); the link and its other streams carry on."""
    ours, theirs = trio.testing.memory_stream_pair()
    conn = H2Connection(ours, client_side=True, ping_interval=None)
    peer = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=False, header_encoding=None)
    )
    peer.initiate_connection()

    async def answer_both() -> None:  # the raw peer: a huge response on 1, a small one on 3
        answered = False
        with trio.fail_after(5):
            while not answered:
                for event in peer.receive_data(await theirs.receive_some(65536)):
                    if isinstance(event, h2.events.RequestReceived) and event.stream_id == 3:
                        big = [(b":status", b"200")] + [
                            (b"x-h%d" % i, b"v" * 100) for i in range(700)
                        ]
                        peer.send_headers(1, big, end_stream=True)
                        peer.send_headers(3, [(b":status", b"200")], end_stream=True)
                        answered = True
                await theirs.send_all(peer.data_to_send())

    async with trio.open_nursery() as nursery:
        await nursery.start(conn.serve)
        nursery.start_soon(answer_both)
        first = await conn.open_stream(REQ, end_stream=True)
        second = await conn.open_stream(REQ, end_stream=True)
        with trio.fail_after(5):
            assert (b":status", b"200") in await second.response_headers()
            with pytest.raises(StreamReset):
                await first.response_headers()
        assert conn.close_reason is None
        nursery.cancel_scope.cancel()
