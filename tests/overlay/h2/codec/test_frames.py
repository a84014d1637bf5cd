"""Frames: hyperframe as the oracle, under any split of the bytes.

A sequence of raw frames (valid and not: every type, random flags, stream IDs with and without
the reserved bit, padding that fits or not, fixed-size payloads of the wrong size, frames over
the size limit) goes through hyperframe one frame at a time and through our reader in random
chunks; the frames must be the same, up to the same first refusal.  Where hyperframe deviates
from RFC 9113 (listed in ``frames.py``), the expected verdict is the RFC's, and a unit test
below pins hyperframe's deviation so the list stays true.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hyperframe import frame as hf
from hyperframe.exceptions import HyperframeError
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.h2.codec import frames as fr
from overlay.h2.codec.errors import H2_FRAME_SIZE_ERROR

REFUSED = "refused"


def raw(frame_type: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return struct.pack(">IBI", len(payload) << 8 | frame_type, flags, stream_id) + payload


def _flags(f: hf.Frame) -> set[str]:
    return set(f.flags)


def _priority(f: hf.HeadersFrame | hf.PriorityFrame) -> fr.Priority:
    return fr.Priority(f.depends_on, f.stream_weight, f.exclusive)


def _from_hyperframe(f: hf.Frame, length: int) -> fr.Frame:
    """Our frame for hyperframe's (the oracle's reading, in our types)."""
    flags = _flags(f)
    if isinstance(f, hf.DataFrame):
        return fr.DataFrame(f.stream_id, f.data, "END_STREAM" in flags, f.flow_controlled_length)
    if isinstance(f, hf.HeadersFrame):
        return fr.HeadersFrame(
            f.stream_id,
            f.data,
            "END_STREAM" in flags,
            "END_HEADERS" in flags,
            _priority(f) if "PRIORITY" in flags else None,
        )
    if isinstance(f, hf.PriorityFrame):
        return fr.PriorityFrame(f.stream_id, _priority(f))
    if isinstance(f, hf.RstStreamFrame):
        return fr.RstStreamFrame(f.stream_id, f.error_code)
    if isinstance(f, hf.SettingsFrame):
        return fr.SettingsFrame("ACK" in flags, tuple(f.settings.items()))
    if isinstance(f, hf.PushPromiseFrame):
        return fr.PushPromiseFrame(
            f.stream_id, f.promised_stream_id, f.data, "END_HEADERS" in flags
        )
    if isinstance(f, hf.PingFrame):
        return fr.PingFrame("ACK" in flags, f.opaque_data)
    if isinstance(f, hf.GoAwayFrame):
        # hyperframe keeps the reserved bit; RFC 9113 6.8 says to ignore it.
        return fr.GoAwayFrame(f.last_stream_id & fr.MAX_STREAM_ID, f.error_code, f.additional_data)
    if isinstance(f, hf.WindowUpdateFrame):
        return fr.WindowUpdateFrame(f.stream_id, f.window_increment)
    if isinstance(f, hf.ContinuationFrame):
        return fr.ContinuationFrame(f.stream_id, f.data, "END_HEADERS" in flags)
    assert isinstance(f, hf.ExtensionFrame)
    return fr.UnknownFrame(f.type, f.flag_byte, f.stream_id, length)


def _padded_block_rfc(
    frame_type: int, flags: int, stream_id: int, payload: bytes
) -> fr.Frame | str:
    """RFC 9113 6.2 / 6.6 for padded HEADERS and any PUSH_PROMISE, where hyperframe is off."""
    padded = bool(flags & fr.FLAG_PADDED)
    if not stream_id or (padded and not payload):
        return REFUSED
    pad = payload[0] if padded else 0
    fixed = 4 if frame_type == fr.PUSH_PROMISE else (5 if flags & fr.FLAG_PRIORITY else 0)
    start = 1 if padded else 0
    end = len(payload) - pad
    if end < start + fixed:
        return REFUSED
    fragment = payload[start + fixed : end]
    if frame_type == fr.PUSH_PROMISE:
        promised = int.from_bytes(payload[start : start + 4], "big") & fr.MAX_STREAM_ID
        if not promised or promised % 2:
            return REFUSED
        return fr.PushPromiseFrame(stream_id, promised, fragment, bool(flags & fr.FLAG_END_HEADERS))
    priority = None
    if fixed:
        dep = int.from_bytes(payload[1:5], "big")
        priority = fr.Priority(dep & fr.MAX_STREAM_ID, payload[5], bool(dep >> 31))
    return fr.HeadersFrame(
        stream_id,
        fragment,
        bool(flags & fr.FLAG_END_STREAM),
        bool(flags & fr.FLAG_END_HEADERS),
        priority,
    )


def expected_frame(
    frame_type: int, flags: int, stream_id: int, payload: bytes, max_size: int
) -> fr.Frame | str:
    """The verdict on one frame: hyperframe's, or the RFC's where hyperframe deviates."""
    if len(payload) > max_size:
        return REFUSED  # h2 enforces this before hyperframe sees the frame
    stream_id &= fr.MAX_STREAM_ID
    if (frame_type == fr.HEADERS and flags & fr.FLAG_PADDED) or frame_type == fr.PUSH_PROMISE:
        return _padded_block_rfc(frame_type, flags, stream_id, payload)
    if frame_type == fr.WINDOW_UPDATE and len(payload) == 4:
        # Reserved bit ignored, and an increment of 0 left to the connection (RFC 9113 6.9).
        return fr.WindowUpdateFrame(stream_id, int.from_bytes(payload, "big") & fr.MAX_STREAM_ID)
    if frame_type == 0xA:  # ALTSVC: hyperframe parses it, we treat it as any unknown type
        return fr.UnknownFrame(frame_type, flags, stream_id, len(payload))
    header = struct.pack(">IBI", len(payload) << 8 | frame_type, flags, stream_id)
    try:
        f, length = hf.Frame.parse_frame_header(memoryview(header))
        f.parse_body(memoryview(payload))
    except HyperframeError:
        return REFUSED
    return _from_hyperframe(f, length)


_STREAM_IDS = st.sampled_from([0, 1, 2, 3, 5, fr.MAX_STREAM_ID, 1 << 31, (1 << 31) | 7])
_FIXED = {fr.PRIORITY: 5, fr.RST_STREAM: 4, fr.PING: 8, fr.WINDOW_UPDATE: 4, fr.GOAWAY: 8}


@st.composite
def raw_frames(draw: st.DrawFn) -> tuple[int, int, int, bytes]:
    frame_type = draw(st.integers(0, 12))
    flags = draw(
        st.sampled_from([0, fr.FLAG_END_STREAM, fr.FLAG_END_HEADERS, fr.FLAG_PADDED, 0x29, 0x2D])
        | st.integers(0, 255)
    )
    # Fixed-size frames mostly get their size; control frames mostly go on the right stream.
    if frame_type in (fr.SETTINGS, fr.PING, fr.GOAWAY) and draw(st.integers(0, 4)):
        stream_id = 0
    elif frame_type == fr.SETTINGS and flags & fr.FLAG_ACK:
        stream_id = draw(_STREAM_IDS)
    else:
        stream_id = draw(_STREAM_IDS)
    if frame_type in _FIXED and draw(st.integers(0, 3)):
        size = _FIXED[frame_type] + (draw(st.integers(0, 20)) if frame_type == fr.GOAWAY else 0)
    elif frame_type == fr.SETTINGS and draw(st.integers(0, 3)):
        size = 0 if flags & fr.FLAG_ACK else 6 * draw(st.integers(0, 4))
    else:
        size = draw(st.integers(0, 40))
    payload = bytearray(draw(st.binary(min_size=size, max_size=size)))
    if payload and flags & fr.FLAG_PADDED and draw(st.booleans()):
        payload[0] = draw(st.integers(0, len(payload)))  # padding that fits, mostly
    if frame_type == fr.PUSH_PROMISE and len(payload) >= 5 and draw(st.booleans()):
        payload[1:5] = (2 * draw(st.integers(1, 100))).to_bytes(4, "big")
    return frame_type, flags, stream_id, bytes(payload)


def _as_dict_settings(frame: fr.Frame) -> fr.Frame:
    """hyperframe keeps SETTINGS in a dict (a repeated setting: the last value, at the place of
    the first); we keep the list as sent, which the connection applies in order to the same
    effect (RFC 9113 6.5.3)."""
    if isinstance(frame, fr.SettingsFrame):
        return fr.SettingsFrame(frame.ack, tuple(dict(frame.settings).items()))
    return frame


def _read_in_chunks(
    data: bytes, cuts: list[int], max_size: int
) -> tuple[list[fr.Frame], bool, int]:
    reader = fr.FrameReader(max_size)
    got: list[fr.Frame] = []
    bounds = [0, *sorted(c % (len(data) + 1) for c in cuts), len(data)]
    peak = 0
    for start, stop in itertools.pairwise(bounds):
        reader.receive_data(data[start:stop])
        try:
            while (frame := reader.next_frame()) is not None:
                got.append(frame)
        except fr.FrameError:
            return got, True, peak
        peak = max(peak, reader.buffered)
    return got, False, peak


@settings(max_examples=600, deadline=None)
@given(
    st.lists(raw_frames(), min_size=1, max_size=12),
    st.lists(st.integers(0, 10_000), max_size=12),
    st.sampled_from([fr.DEFAULT_MAX_FRAME_SIZE, 30]),
)
def test_same_frames_as_hyperframe_under_any_split(
    frames: list[tuple[int, int, int, bytes]], cuts: list[int], max_size: int
) -> None:
    expected: list[fr.Frame] = []
    refused = False
    for frame_type, flags, stream_id, payload in frames:
        verdict = expected_frame(frame_type, flags, stream_id, payload, max_size)
        if verdict == REFUSED:
            refused = True
            break
        assert not isinstance(verdict, str)
        expected.append(verdict)
    data = b"".join(raw(*f) for f in frames)
    got, got_refused, peak = _read_in_chunks(data, cuts, max_size)
    assert [_as_dict_settings(f) for f in got] == expected
    assert got_refused == refused
    # Never more than one frame and one read held.
    assert peak <= fr.HEADER_SIZE + max_size + len(data)


@settings(max_examples=200, deadline=None)
@given(st.lists(raw_frames(), min_size=1, max_size=8))
def test_one_byte_at_a_time(frames: list[tuple[int, int, int, bytes]]) -> None:
    data = b"".join(raw(*f) for f in frames)
    whole, whole_refused, _ = _read_in_chunks(data, [], 16384)
    bytewise, bytewise_refused, peak = _read_in_chunks(data, list(range(len(data))), 16384)
    assert whole == bytewise
    assert whole_refused == bytewise_refused
    assert peak <= fr.HEADER_SIZE + max((len(f[3]) for f in frames), default=0)


# --------------------------------------------------------------------------------------------
# Where hyperframe deviates from RFC 9113 (pinned, so frames.py's list stays true)


def _hyperframe(frame_type: int, flags: int, stream_id: int, payload: bytes) -> object:
    header = struct.pack(">IBI", len(payload) << 8 | frame_type, flags, stream_id)
    try:
        f, _ = hf.Frame.parse_frame_header(memoryview(header))
        f.parse_body(memoryview(payload))
    except HyperframeError:
        return REFUSED
    return f


def _ours(frame_type: int, flags: int, stream_id: int, payload: bytes) -> object:
    try:
        return fr.FrameReader().receive(raw(frame_type, flags, stream_id, payload))[0]
    except fr.FrameError:
        return REFUSED


def test_deviation_headers_all_padding_is_valid() -> None:
    payload = b"\x03abc"  # pad length 3, empty fragment, 3 octets of padding
    assert _hyperframe(fr.HEADERS, fr.FLAG_PADDED, 1, payload) == REFUSED
    assert _ours(fr.HEADERS, fr.FLAG_PADDED, 1, payload) == fr.HeadersFrame(
        1, b"", False, False, None
    )


def test_deviation_headers_padding_over_priority_is_refused() -> None:
    payload = b"\x03" + b"\x00\x00\x00\x00\x10" + b"ab"  # 3 of padding, only 2 left
    assert _hyperframe(fr.HEADERS, fr.FLAG_PADDED | fr.FLAG_PRIORITY, 1, payload) != REFUSED
    assert _ours(fr.HEADERS, fr.FLAG_PADDED | fr.FLAG_PRIORITY, 1, payload) == REFUSED


def test_deviation_push_promise_padding_over_promised_id_is_refused() -> None:
    payload = b"\x03" + b"\x00\x00\x00\x02"  # 3 of padding over the promised stream ID
    assert _hyperframe(fr.PUSH_PROMISE, fr.FLAG_PADDED, 1, payload) != REFUSED
    assert _ours(fr.PUSH_PROMISE, fr.FLAG_PADDED, 1, payload) == REFUSED


def test_deviation_reserved_bits_ignored() -> None:
    wu = _hyperframe(fr.WINDOW_UPDATE, 0, 1, b"\x80\x00\x00\x05")
    assert wu == REFUSED
    assert _ours(fr.WINDOW_UPDATE, 0, 1, b"\x80\x00\x00\x05") == fr.WindowUpdateFrame(1, 5)
    goaway = _hyperframe(fr.GOAWAY, 0, 0, b"\x80\x00\x00\x05\x00\x00\x00\x00")
    assert isinstance(goaway, hf.GoAwayFrame)
    assert goaway.last_stream_id == (1 << 31) | 5
    assert _ours(fr.GOAWAY, 0, 0, b"\x80\x00\x00\x05\x00\x00\x00\x00") == fr.GoAwayFrame(5, 0, b"")


def test_deviation_push_promise_reserved_bit_ignored() -> None:
    payload = b"\x80\x00\x00\x00"  # promised stream 0 once the reserved bit is ignored
    assert _hyperframe(fr.PUSH_PROMISE, 0, 1, payload) != REFUSED
    assert _ours(fr.PUSH_PROMISE, 0, 1, payload) == REFUSED


def test_deviation_zero_window_increment_left_to_the_connection() -> None:
    assert _hyperframe(fr.WINDOW_UPDATE, 0, 1, b"\x00" * 4) == REFUSED
    assert _ours(fr.WINDOW_UPDATE, 0, 1, b"\x00" * 4) == fr.WindowUpdateFrame(1, 0)


# --------------------------------------------------------------------------------------------
# The size limit, checked at the header


def test_oversize_frame_refused_at_its_header() -> None:
    reader = fr.FrameReader(max_frame_size=16384)
    reader.receive_data(raw(fr.DATA, 0, 1, b"x" * 10)[:9].replace(b"\x00\x00\x0a", b"\x00\x40\x01"))
    with pytest.raises(fr.FrameTooLarge) as info:
        reader.next_frame()  # 16385 announced, nothing of the payload sent
    assert info.value.h2_error_code == H2_FRAME_SIZE_ERROR


def test_frame_at_the_limit_accepted() -> None:
    reader = fr.FrameReader(max_frame_size=100)
    frame = raw(fr.DATA, fr.FLAG_END_STREAM, 1, b"x" * 100)
    assert reader.receive(frame[:50]) == []
    assert reader.buffered == 41
    assert reader.receive(frame[50:]) == [fr.DataFrame(1, b"x" * 100, True, 100)]
    assert reader.buffered == 0


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (raw(fr.PING, 0, 0, b"x" * 7), H2_FRAME_SIZE_ERROR),
        (raw(fr.SETTINGS, fr.FLAG_ACK, 0, b"x" * 6), H2_FRAME_SIZE_ERROR),
        (raw(fr.SETTINGS, 0, 0, b"x" * 5), H2_FRAME_SIZE_ERROR),
        (raw(fr.RST_STREAM, 0, 1, b"x" * 5), H2_FRAME_SIZE_ERROR),
        (raw(fr.SETTINGS, 0, 1, b""), 0x1),
        (raw(fr.DATA, 0, 0, b""), 0x1),
        (raw(fr.DATA, fr.FLAG_PADDED, 1, b"\x01"), 0x1),
    ],
)
def test_error_codes(frame: bytes, code: int) -> None:
    with pytest.raises(fr.FrameError) as info:
        fr.FrameReader().receive(frame)
    assert info.value.h2_error_code == code


# --------------------------------------------------------------------------------------------
# Writers, read back by hyperframe


def _parse_all(data: bytes) -> list[hf.Frame]:
    out = []
    view = memoryview(data)
    while view:
        f, length = hf.Frame.parse_frame_header(view[:9])
        f.parse_body(view[9 : 9 + length])
        out.append(f)
        view = view[9 + length :]
    return out


def test_writers_read_back_by_hyperframe() -> None:
    data = b"".join(
        [
            fr.data_frame(3, b"body", end_stream=True),
            fr.settings_frame(((1, 0), (4, 65535))),
            fr.SETTINGS_ACK,
            fr.ping_frame(b"12345678", ack=True),
            fr.rst_stream_frame(5, 8),
            fr.window_update_frame(0, 1000),
            fr.goaway_frame(7, 11, b"calm"),
        ]
    )
    f = _parse_all(data)
    assert [type(x) for x in f] == [
        hf.DataFrame,
        hf.SettingsFrame,
        hf.SettingsFrame,
        hf.PingFrame,
        hf.RstStreamFrame,
        hf.WindowUpdateFrame,
        hf.GoAwayFrame,
    ]
    assert f[0].data == b"body" and "END_STREAM" in f[0].flags and f[0].stream_id == 3
    assert f[1].settings == {1: 0, 4: 65535} and "ACK" not in f[1].flags
    assert "ACK" in f[2].flags
    assert f[3].opaque_data == b"12345678" and "ACK" in f[3].flags
    assert (f[4].stream_id, f[4].error_code) == (5, 8)
    assert (f[5].stream_id, f[5].window_increment) == (0, 1000)
    assert (f[6].last_stream_id, f[6].error_code, f[6].additional_data) == (7, 11, b"calm")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=200), st.integers(1, 64), st.booleans())
def test_header_block_split_into_continuations(block: bytes, size: int, end: bool) -> None:
    data = fr.headers_frames(9, block, end_stream=end, max_frame_size=size)
    f = _parse_all(data)
    assert isinstance(f[0], hf.HeadersFrame)
    assert all(isinstance(x, hf.ContinuationFrame) for x in f[1:])
    assert b"".join(x.data for x in f) == block
    assert all(len(x.data) <= size for x in f)
    assert ["END_HEADERS" in x.flags for x in f] == [False] * (len(f) - 1) + [True]
    assert ("END_STREAM" in f[0].flags) == end
    assert all(x.stream_id == 9 for x in f)
