"""The DATA fast path must be indistinguishable from h2's own: same bytes, same state, same
events, same errors -- under any split of the inbound byte stream."""

from __future__ import annotations

import itertools

import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import hyperframe.frame
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.h2.data import (
    CLIENT_PREFACE,
    FrameSplitter,
    Refusal,
    receive_bytes,
    send_data_frame,
)
from overlay.h2.limits import H2Limits
from overlay.h2.setup import RefusingH2, new_h2_state, start_h2_state

LIMITS = H2Limits(stream_window=1 << 20, connection_window=4 << 20, max_frame_size=1 << 16)
CONNECT = [(b":method", b"CONNECT"), (b":authority", b"echo.default.isthmus:7")]


def _pair() -> tuple[RefusingH2, RefusingH2]:
    client = new_h2_state(client_side=True, limits=LIMITS)
    server = new_h2_state(client_side=False, limits=LIMITS)
    start_h2_state(client, LIMITS)
    start_h2_state(server, LIMITS)
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    server.receive_data(client.data_to_send())
    client.receive_data(server.data_to_send())
    return client, server


def _open(client: RefusingH2, server: RefusingH2, stream_id: int = 1) -> None:
    client.send_headers(stream_id, CONNECT)
    server.receive_data(client.data_to_send())
    server.send_headers(stream_id, [(b":status", b"200")])
    client.receive_data(server.data_to_send())


def _state(conn: RefusingH2, stream_id: int) -> tuple[object, ...]:
    stream = conn.streams[stream_id]
    return (
        conn.outbound_flow_control_window,
        stream.outbound_flow_control_window,
        stream.state_machine.state,
        conn.state_machine.state,
    )


@pytest.mark.parametrize("end_stream", [False, True])
@pytest.mark.parametrize("size", [0, 1, 1000, 16384, 65536])
def test_sent_frame_is_byte_for_byte_what_h2_sends(size: int, end_stream: bool) -> None:
    ours, theirs = _pair()[0], _pair()[0]
    payload = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    for conn in (ours, theirs):
        conn.send_headers(1, CONNECT)
        conn.ping(b"12345678")  # pending control output must go out first, in order
    out = bytearray()
    send_data_frame(ours, out, 1, memoryview(payload), end_stream=end_stream)
    out += ours.data_to_send()
    theirs.send_data(1, payload, end_stream=end_stream)
    assert bytes(out) == theirs.data_to_send()
    assert _state(ours, 1) == _state(theirs, 1)


def test_send_refuses_what_h2_refuses() -> None:
    client, server = _pair()
    _open(client, server)
    out = bytearray()
    with pytest.raises(h2.exceptions.FrameTooLargeError):
        send_data_frame(client, out, 1, b"x" * (client.max_outbound_frame_size + 1))
    with pytest.raises(h2.exceptions.ProtocolError):
        send_data_frame(client, out, 3, b"x")  # never opened
    client.end_stream(1)
    with pytest.raises(h2.exceptions.ProtocolError):
        send_data_frame(client, out, 1, b"x")  # half-closed (local): no more DATA
    _open(client, server, 3)
    client.reset_stream(3)
    with pytest.raises(h2.exceptions.StreamClosedError):
        send_data_frame(client, out, 3, b"x")
    assert out == b""  # nothing half-written


def test_send_respects_the_peer_window() -> None:
    client, server = _pair()
    _open(client, server)
    stream = client.streams[1]
    stream.outbound_flow_control_window = 10
    with pytest.raises(h2.exceptions.FlowControlError):
        send_data_frame(client, bytearray(), 1, b"x" * 11)
    send_data_frame(client, bytearray(), 1, b"x" * 10)
    assert client.local_flow_control_window(1) == 0


def _event_view(events: list[h2.events.Event]) -> list[tuple[object, ...]]:
    """Events as comparable tuples.  Consecutive DATA of one stream is merged: h2 reports a
    frame at a time, the fast path a piece of a frame per read, and the bytes, their order and
    where the stream ends are what must agree."""
    view: list[tuple[object, ...]] = []
    for event in events:
        if isinstance(event, h2.events.DataReceived):
            data, ended = bytes(event.data or b""), event.stream_ended is not None
            last = view[-1] if view else None
            if last is not None and last[0] == "data" and last[1] == event.stream_id:
                assert not last[3], "DATA after END_STREAM"
                view[-1] = ("data", event.stream_id, last[2] + data, ended)
            else:
                view.append(("data", event.stream_id, data, ended))
        elif isinstance(event, h2.events.StreamEnded):
            view.append(("StreamEnded", event.stream_id))
        else:
            view.append((type(event).__name__, getattr(event, "stream_id", None)))
    return view


def _conversation() -> tuple[bytes, list[int]]:
    """What a client sends: preface, SETTINGS, requests, DATA of many sizes (padded too),
    trailers with CONTINUATION, PING, WINDOW_UPDATE, an unknown frame, END_STREAM."""
    client = new_h2_state(client_side=True, limits=LIMITS)
    start_h2_state(client, LIMITS)
    wire = bytearray(client.data_to_send())
    peer = new_h2_state(client_side=False, limits=LIMITS)  # its SETTINGS: 64 KiB frames
    start_h2_state(peer, LIMITS)
    client.receive_data(peer.data_to_send())
    for sid in (1, 3):
        client.send_headers(sid, CONNECT)
    for size in (0, 1, 9, 10, 1000, 16384, 40000, 65536):
        client.send_data(1, bytes([size % 251]) * size)
        client.send_data(3, b"p" * (size // 3), pad_length=7)
    client.ping(b"pingpong")
    client.increment_flow_control_window(1000)
    wire += client.data_to_send()
    wire += (7).to_bytes(3, "big") + b"\xee\x00" + (1).to_bytes(4, "big") + b"unknown"
    trailers = [(b"x-trailer-" + str(i).encode(), b"v" * 200) for i in range(200)]
    client.max_outbound_frame_size = 16384  # force CONTINUATION frames
    client.streams[1].max_outbound_frame_size = 16384
    client.send_headers(1, trailers, end_stream=True)
    client.send_data(3, b"last", end_stream=True)
    wire += client.data_to_send()
    return bytes(wire), [1, 3]


WIRE, _ = _conversation()


def _receive_all(chunks: list[bytes]) -> tuple[list[tuple[object, ...]], bytes]:
    server = new_h2_state(client_side=False, limits=LIMITS)
    start_h2_state(server, LIMITS)
    server.data_to_send()
    splitter = FrameSplitter(preface=len(CLIENT_PREFACE), max_frame_size=LIMITS.max_frame_size)
    events: list[h2.events.Event] = []
    for chunk in chunks:
        events += receive_bytes(server, splitter, chunk)
    assert splitter.buffered == 0  # DATA is cut through; no other frame is left incomplete
    return _event_view(events), server.data_to_send()


def _reference(chunks: list[bytes]) -> tuple[list[tuple[object, ...]], bytes]:
    server = new_h2_state(client_side=False, limits=LIMITS)
    start_h2_state(server, LIMITS)
    server.data_to_send()
    events: list[h2.events.Event] = []
    for chunk in chunks:
        events += server.receive_data(chunk)
    return _event_view(events), server.data_to_send()


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


def test_whole_conversation_gives_h2s_events_and_answers() -> None:
    ours = _receive_all([WIRE])
    assert ours == _reference([WIRE])
    kinds = {e[0] for e in ours[0]}
    assert {"data", "RequestReceived", "TrailersReceived", "PingReceived"} <= kinds


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(WIRE)), max_size=40))
def test_any_split_of_the_stream_gives_the_same_events(cuts: list[int]) -> None:
    chunks = _split(WIRE, cuts)
    assert _receive_all(chunks) == _reference([WIRE])


def _frame_ends(wire: bytes) -> list[int]:
    ends, pos = [], len(CLIENT_PREFACE)
    while pos < len(wire):
        pos += 9 + int.from_bytes(wire[pos : pos + 3], "big")
        ends.append(pos)
    return ends


def test_byte_by_byte_gives_the_same_events() -> None:
    head = WIRE[: max(e for e in _frame_ends(WIRE) if e <= 3000)]
    assert _receive_all([head[i : i + 1] for i in range(len(head))]) == _reference([head])


def test_a_data_frame_is_passed_on_as_it_arrives() -> None:
    # Cut-through: payload that has arrived is delivered, not held until the frame is whole.
    ends = _frame_ends(WIRE)
    big = next(e for e in ends if e > 60_000)  # the end of a frame past 60 KB of traffic...
    start = max(e for e in ends if e < big)
    assert WIRE[start + 3] == 0 and big - start - 9 > 1000  # ...that is a large DATA frame
    cut = start + 9 + 1000
    events, _ = _receive_all([WIRE[:cut]])
    whole_events, _ = _receive_all([WIRE[:big]])
    delivered = b"".join(e[2] for e in events if e[0] == "data")
    expected = b"".join(e[2] for e in whole_events if e[0] == "data")
    assert len(expected) - len(delivered) == (big - start - 9) - 1000
    assert expected.startswith(delivered)


def test_overlong_frame_is_refused_at_its_header_with_frame_size_error() -> None:
    client, server = _pair()
    _open(client, server)
    splitter = FrameSplitter(preface=0, max_frame_size=LIMITS.max_frame_size)
    too_long = LIMITS.max_frame_size + 1
    header = too_long.to_bytes(3, "big") + b"\x00\x00" + (1).to_bytes(4, "big")
    with pytest.raises(h2.exceptions.FrameTooLargeError):
        receive_bytes(server, splitter, header)  # no payload needed to decide
    goaway = server.data_to_send()
    frame, _ = hyperframe.frame.Frame.parse_frame_header(memoryview(goaway[:9]))
    assert isinstance(frame, hyperframe.frame.GoAwayFrame)
    frame.parse_body(memoryview(goaway[9:]))
    assert frame.error_code == h2.errors.ErrorCodes.FRAME_SIZE_ERROR


def test_data_inside_a_header_block_is_a_protocol_error_as_in_h2() -> None:
    client, server = _pair()
    _open(client, server)
    headers = hyperframe.frame.HeadersFrame(1)  # no END_HEADERS: a block is open
    headers.data = client.encoder.encode([(b"x-a", b"b")])
    data = hyperframe.frame.DataFrame(1, b"not allowed here")
    wire = headers.serialize() + data.serialize()
    splitter = FrameSplitter(preface=0, max_frame_size=LIMITS.max_frame_size)
    with pytest.raises(h2.exceptions.ProtocolError, match="header block"):
        receive_bytes(server, splitter, wire)


def test_data_beyond_the_window_is_a_flow_control_error_as_in_h2() -> None:
    client, server = _pair()
    _open(client, server)
    server.streams[1]._inbound_window_manager.current_window_size = 10
    server.streams[1]._inbound_window_manager.max_window_size = 10
    frame = hyperframe.frame.DataFrame(1, b"x" * 11).serialize()
    splitter = FrameSplitter(preface=0, max_frame_size=LIMITS.max_frame_size)
    with pytest.raises(h2.exceptions.FlowControlError):
        receive_bytes(server, splitter, frame)


def test_data_on_a_reset_stream_is_answered_like_h2() -> None:
    answers = []
    for fast in (True, False):
        client, server = _pair()
        _open(client, server)
        server.reset_stream(1)
        server.data_to_send()
        frame = hyperframe.frame.DataFrame(1, b"late").serialize()
        if fast:
            splitter = FrameSplitter(preface=0, max_frame_size=LIMITS.max_frame_size)
            events = receive_bytes(server, splitter, frame)
        else:
            events = server.receive_data(frame)
        answers.append(
            (_event_view(events), server.data_to_send(), server.inbound_flow_control_window)
        )
    assert answers[0] == answers[1]


def test_a_frame_over_a_header_block_bound_ends_the_segments_right_there() -> None:
    """Sans-IO: frames before the crossing one are passed on, each whole and on its own, then
    one Refusal; the crossing frame's payload is not even needed, and nothing follows."""
    ping = hyperframe.frame.PingFrame(0, opaque_data=b"12345678").serialize()
    head = hyperframe.frame.HeadersFrame(1, data=b"\x82").serialize()  # no END_HEADERS
    more = [hyperframe.frame.ContinuationFrame(1, data=b"\x84").serialize() for _ in range(3)]
    splitter = FrameSplitter(preface=0, max_frame_size=16384, max_continuation_frames=2)
    wire = ping + ping + head + b"".join(more) + ping
    crossing = len(ping) * 2 + len(head) + len(more[0]) * 2 + 9  # through the 3rd's header
    out = splitter.feed(wire[:crossing])
    assert out[:-1] == [ping, ping, head, more[0], more[1]]
    assert isinstance(out[-1], Refusal)
    assert out[-1].error.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
    assert splitter.feed(wire[crossing:]) == []


def test_header_block_bytes_are_counted_across_frames() -> None:
    splitter = FrameSplitter(preface=0, max_frame_size=16384, max_header_block_bytes=100)
    head = hyperframe.frame.HeadersFrame(1, data=b"\x82" * 60).serialize()
    cont = hyperframe.frame.ContinuationFrame(1, data=b"\x84" * 40, flags=["END_HEADERS"])
    assert splitter.feed(head + cont.serialize()) == [head, cont.serialize()]  # 100: at the bound
    splitter = FrameSplitter(preface=0, max_frame_size=16384, max_header_block_bytes=99)
    out = splitter.feed(head + cont.serialize())
    assert out[0] == head and isinstance(out[1], Refusal)
