"""HTTP/2 frames (RFC 9113 section 4 and 6): an incremental reader and the writers, sans-IO.

Why our own: the link's hot path is "bytes in, a few frames out" and hyperframe builds a
mutable object with a flag set per frame and copies every payload through a memoryview; this
reader does one ``struct`` unpack per header and one slice per payload.  It is also stricter
where hyperframe is loose (see below), since a link must refuse what RFC 9113 refuses.

Theory of operation (reader)
----------------------------
:class:`FrameReader` takes bytes in any split and returns the complete frames they finish.
It keeps the current buffer and a position in it, and the chunks received after it as a list;
it joins them only once enough bytes are there for the next step: nine for a header, then the
header's length for the payload, so a frame that arrives in many reads is copied once.
The length is checked against ``max_frame_size`` (the SETTINGS_MAX_FRAME_SIZE we advertised)
as soon as the nine header bytes are in, so a peer cannot make us buffer more than one frame:
what the reader holds is always less than ``9 + max_frame_size`` plus one read.  Frames of
unknown types are bounded the same way and reported without their payload (RFC 9113 4.1: the
connection ignores them).

Per-frame checks are the ones that need only the frame itself (RFC 9113 section 6): stream 0
or not, fixed payload sizes, padding that does not fit, a PUSH_PROMISE's promised stream.
Whatever needs connection state (stream states, CONTINUATION sequencing, SETTINGS values,
a zero WINDOW_UPDATE increment, which is a stream error on a stream and a connection error on
stream 0) is the connection's to decide, so the frame carries it through.

Where hyperframe differs (and we follow the RFC): it refuses a padded HEADERS frame whose
padding fills the rest of the payload (an empty fragment is valid) and accepts HEADERS whose
padding overlaps the priority fields; it accepts PUSH_PROMISE padding that overlaps the
promised stream ID; it does not mask the reserved bit of GOAWAY's last stream ID, of
WINDOW_UPDATE's increment or of PUSH_PROMISE's promised stream ID (RFC 9113 6.6, 6.8, 6.9:
ignore it), and it refuses a zero increment itself.  ``tests/overlay/h2/codec/test_frames.py``
pins each of these.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from overlay.h2.codec.errors import H2_FRAME_SIZE_ERROR, CodecError

DATA = 0x0
HEADERS = 0x1
PRIORITY = 0x2
RST_STREAM = 0x3
SETTINGS = 0x4
PUSH_PROMISE = 0x5
PING = 0x6
GOAWAY = 0x7
WINDOW_UPDATE = 0x8
CONTINUATION = 0x9

FLAG_END_STREAM = 0x1
FLAG_ACK = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
FLAG_PRIORITY = 0x20

HEADER_SIZE = 9
DEFAULT_MAX_FRAME_SIZE = 16384
MAX_MAX_FRAME_SIZE = (1 << 24) - 1
MAX_STREAM_ID = (1 << 31) - 1

_HEADER = struct.Struct(">IBI")  # length << 8 | type, flags, stream id
_U32 = struct.Struct(">I")
_U32X2 = struct.Struct(">II")
_PRIORITY = struct.Struct(">IB")
_SETTING = struct.Struct(">HI")


class FrameError(CodecError):
    """A frame RFC 9113 refuses whatever the connection's state (a connection error)."""


class FrameTooLarge(FrameError):
    """A frame longer than the SETTINGS_MAX_FRAME_SIZE we advertised (RFC 9113 4.2)."""

    h2_error_code = H2_FRAME_SIZE_ERROR


class FrameSizeError(FrameError):
    """A frame whose payload has the wrong size for its type."""

    h2_error_code = H2_FRAME_SIZE_ERROR


# --------------------------------------------------------------------------------------------
# Frames as parsed.  ``stream_id`` has the reserved bit masked off.


@dataclass(frozen=True, slots=True)
class Priority:
    """Priority fields (deprecated by RFC 9113 5.3.2, parsed so their bytes are accounted)."""

    depends_on: int
    weight: int  # the wire value, 0-255 (the weight is this plus one)
    exclusive: bool


@dataclass(frozen=True, slots=True)
class DataFrame:
    stream_id: int
    data: bytes
    end_stream: bool
    flow_length: int  # the whole payload, padding included: what flow control counts (6.1)


@dataclass(frozen=True, slots=True)
class HeadersFrame:
    stream_id: int
    fragment: bytes
    end_stream: bool
    end_headers: bool
    priority: Priority | None


@dataclass(frozen=True, slots=True)
class PriorityFrame:
    stream_id: int
    priority: Priority


@dataclass(frozen=True, slots=True)
class RstStreamFrame:
    stream_id: int
    error_code: int


@dataclass(frozen=True, slots=True)
class SettingsFrame:
    ack: bool
    settings: tuple[tuple[int, int], ...]  # in order, repeats kept: the last one wins (6.5.3)


@dataclass(frozen=True, slots=True)
class PushPromiseFrame:
    stream_id: int
    promised_stream_id: int
    fragment: bytes
    end_headers: bool


@dataclass(frozen=True, slots=True)
class PingFrame:
    ack: bool
    opaque: bytes


@dataclass(frozen=True, slots=True)
class GoAwayFrame:
    last_stream_id: int
    error_code: int
    debug: bytes


@dataclass(frozen=True, slots=True)
class WindowUpdateFrame:
    stream_id: int
    increment: int  # may be 0: the connection answers it (stream or connection error)


@dataclass(frozen=True, slots=True)
class ContinuationFrame:
    stream_id: int
    fragment: bytes
    end_headers: bool


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """A frame of a type RFC 9113 does not define: the connection ignores it (4.1), but must
    still refuse it in the middle of a header block (6.10), so it is reported, payload-less."""

    frame_type: int
    flags: int
    stream_id: int
    length: int


Frame = (
    DataFrame
    | HeadersFrame
    | PriorityFrame
    | RstStreamFrame
    | SettingsFrame
    | PushPromiseFrame
    | PingFrame
    | GoAwayFrame
    | WindowUpdateFrame
    | ContinuationFrame
    | UnknownFrame
)


# --------------------------------------------------------------------------------------------
# Parsing one frame


def _need_stream(kind: str, stream_id: int) -> None:
    if not stream_id:
        raise FrameError(f"{kind} frame on stream 0")


def _need_connection(kind: str, stream_id: int) -> None:
    if stream_id:
        raise FrameError(f"{kind} frame on stream {stream_id}, not on the connection")


def _unpad(kind: str, payload: bytes, flags: int, fixed: int) -> tuple[bytes, int]:
    """Strip padding; returns the payload after the pad-length octet and before the padding,
    and where the fragment starts in it (after ``fixed`` octets of fields).  Padding that does
    not leave room for the fixed fields is refused (RFC 9113 6.1, 6.2, 6.6)."""
    if not flags & FLAG_PADDED:
        if len(payload) < fixed:
            raise FrameSizeError(f"{kind} frame too short for its fields")
        return payload, fixed
    if not payload:
        raise FrameSizeError(f"padded {kind} frame without a pad length")
    pad = payload[0]
    end = len(payload) - pad
    if end < 1 + fixed:
        raise FrameError(f"{kind} frame padding ({pad}) longer than its payload allows")
    return payload[:end], 1 + fixed


def parse_frame(frame_type: int, flags: int, stream_id: int, payload: bytes) -> Frame:
    """Build the frame of one complete payload, checking what RFC 9113 lets the frame alone
    decide."""
    if frame_type == DATA:
        _need_stream("DATA", stream_id)
        if flags & FLAG_PADDED:
            body, start = _unpad("DATA", payload, flags, 0)
            data = body[start:]
        else:
            data = payload
        return DataFrame(stream_id, data, bool(flags & FLAG_END_STREAM), len(payload))
    if frame_type == HEADERS:
        _need_stream("HEADERS", stream_id)
        fixed = 5 if flags & FLAG_PRIORITY else 0
        body, start = _unpad("HEADERS", payload, flags, fixed)
        priority = None
        if fixed:
            dep, weight = _PRIORITY.unpack_from(body, start - 5)
            priority = Priority(dep & MAX_STREAM_ID, weight, bool(dep >> 31))
        return HeadersFrame(
            stream_id,
            body[start:],
            bool(flags & FLAG_END_STREAM),
            bool(flags & FLAG_END_HEADERS),
            priority,
        )
    if frame_type == CONTINUATION:
        _need_stream("CONTINUATION", stream_id)
        return ContinuationFrame(stream_id, payload, bool(flags & FLAG_END_HEADERS))
    if frame_type == WINDOW_UPDATE:
        if len(payload) != 4:
            raise FrameSizeError(f"WINDOW_UPDATE frame of {len(payload)} octets, not 4")
        return WindowUpdateFrame(stream_id, _U32.unpack(payload)[0] & MAX_STREAM_ID)
    if frame_type == SETTINGS:
        _need_connection("SETTINGS", stream_id)
        ack = bool(flags & FLAG_ACK)
        if ack and payload:
            raise FrameSizeError("SETTINGS acknowledgement with a payload")
        if len(payload) % 6:
            raise FrameSizeError(f"SETTINGS frame of {len(payload)} octets, not a multiple of 6")
        return SettingsFrame(ack, tuple(_SETTING.iter_unpack(payload)))
    if frame_type == PING:
        _need_connection("PING", stream_id)
        if len(payload) != 8:
            raise FrameSizeError(f"PING frame of {len(payload)} octets, not 8")
        return PingFrame(bool(flags & FLAG_ACK), payload)
    if frame_type == RST_STREAM:
        _need_stream("RST_STREAM", stream_id)
        if len(payload) != 4:
            raise FrameSizeError(f"RST_STREAM frame of {len(payload)} octets, not 4")
        return RstStreamFrame(stream_id, _U32.unpack(payload)[0])
    if frame_type == GOAWAY:
        _need_connection("GOAWAY", stream_id)
        if len(payload) < 8:
            raise FrameSizeError(f"GOAWAY frame of {len(payload)} octets, under 8")
        last, code = _U32X2.unpack_from(payload)
        return GoAwayFrame(last & MAX_STREAM_ID, code, payload[8:])
    if frame_type == PRIORITY:
        _need_stream("PRIORITY", stream_id)
        if len(payload) != 5:
            raise FrameSizeError(f"PRIORITY frame of {len(payload)} octets, not 5")
        dep, weight = _PRIORITY.unpack(payload)
        return PriorityFrame(stream_id, Priority(dep & MAX_STREAM_ID, weight, bool(dep >> 31)))
    if frame_type == PUSH_PROMISE:
        _need_stream("PUSH_PROMISE", stream_id)
        body, start = _unpad("PUSH_PROMISE", payload, flags, 4)
        promised = _U32.unpack_from(body, start - 4)[0] & MAX_STREAM_ID
        if not promised or promised % 2:
            raise FrameError(f"PUSH_PROMISE promising stream {promised}, not a server stream")
        return PushPromiseFrame(stream_id, promised, body[start:], bool(flags & FLAG_END_HEADERS))
    return UnknownFrame(frame_type, flags, stream_id, len(payload))


# --------------------------------------------------------------------------------------------
# The incremental reader


class FrameReader:
    """Frames from bytes received in any split; see the module docstring.

    Feed bytes with :meth:`receive_data`, then take frames with :meth:`next_frame` until it
    returns None.  A bad frame raises :class:`FrameError` from ``next_frame`` at its place in
    the sequence, after every good frame before it has been returned, whatever the split.
    After an error the reader's state is undefined: the connection ends.

    Copies: a payload inside the current read is one slice of it (none for a read that is
    exactly that payload); one that spans reads is joined once from views of its pieces, and
    the read it ends in becomes the current one.  (Joining the rest of a read with all later
    ones first, as this did before, copied most bytes of a bulk link two or three times:
    ~1.5x the CPU per 64 KiB DATA frame arriving in 256 KiB reads.)
    """

    __slots__ = ("_buf", "_header", "_pos", "_tail", "_tail_len", "max_frame_size")

    def __init__(self, max_frame_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self.max_frame_size = max_frame_size
        """The SETTINGS_MAX_FRAME_SIZE we advertised: the largest payload we accept."""
        self._buf = b""
        self._pos = 0
        self._tail: list[bytes] = []  # reads received after ``_buf``, not yet reached
        self._tail_len = 0
        self._header: tuple[int, int, int, int] | None = None  # length, type, flags, stream

    @property
    def buffered(self) -> int:
        """Bytes received and not yet returned as frames (headers of pending frames excluded)."""
        return len(self._buf) - self._pos + self._tail_len

    def receive_data(self, data: bytes | bytearray) -> None:
        """Take the next bytes received.  The caller takes the frames they complete before it
        reads more, so what is held stays under one frame plus one read."""
        if not data:
            return
        if self._pos == len(self._buf) and not self._tail:
            self._buf = bytes(data)
            self._pos = 0
        else:
            self._tail.append(bytes(data))
            self._tail_len += len(data)

    def _span(self, n: int) -> bytes:
        """The next ``n`` bytes, which run past ``_buf`` (the caller checked they are held):
        joined once; the read they end in becomes ``_buf``."""
        parts: list[bytes | memoryview] = [memoryview(self._buf)[self._pos :]]
        need = n - (len(self._buf) - self._pos)
        tail = self._tail
        used = 0
        while True:
            chunk = tail[used]
            used += 1
            self._tail_len -= len(chunk)
            if len(chunk) >= need:
                parts.append(memoryview(chunk)[:need])
                self._buf, self._pos = chunk, need
                break
            parts.append(chunk)
            need -= len(chunk)
        del tail[:used]
        return b"".join(parts)

    def next_frame(self) -> Frame | None:
        """The next complete frame, or None until more bytes arrive."""
        header = self._header
        if header is None:
            if len(self._buf) - self._pos >= HEADER_SIZE:
                length_type, flags, stream_id = _HEADER.unpack_from(self._buf, self._pos)
                self._pos += HEADER_SIZE
            elif len(self._buf) - self._pos + self._tail_len >= HEADER_SIZE:
                length_type, flags, stream_id = _HEADER.unpack(self._span(HEADER_SIZE))
            else:
                return None
            length = length_type >> 8
            if length > self.max_frame_size:
                raise FrameTooLarge(
                    f"frame of {length} octets, over our limit of {self.max_frame_size}"
                )
            header = (length, length_type & 0xFF, flags, stream_id & MAX_STREAM_ID)
            self._header = header
        length, frame_type, flags, stream_id = header
        pos = self._pos
        if len(self._buf) - pos < length:
            if len(self._buf) - pos + self._tail_len < length:
                return None
            self._header = None
            return parse_frame(frame_type, flags, stream_id, self._span(length))
        self._header = None
        self._pos = pos + length
        return parse_frame(frame_type, flags, stream_id, self._buf[pos : pos + length])

    def receive(self, data: bytes) -> list[Frame]:
        """``receive_data`` and every frame it completes (a bad one raises, dropping those
        before it: for callers that end the connection on any error)."""
        self.receive_data(data)
        frames: list[Frame] = []
        while (frame := self.next_frame()) is not None:
            frames.append(frame)
        return frames


# --------------------------------------------------------------------------------------------
# Writers


def frame_header(length: int, frame_type: int, flags: int, stream_id: int) -> bytes:
    return _HEADER.pack(length << 8 | frame_type, flags, stream_id)


def data_frame(stream_id: int, data: bytes, *, end_stream: bool = False) -> bytes:
    """One DATA frame; the caller keeps ``data`` within the peer's max frame size."""
    return _HEADER.pack(len(data) << 8, FLAG_END_STREAM if end_stream else 0, stream_id) + data


def headers_frames(stream_id: int, block: bytes, *, end_stream: bool, max_frame_size: int) -> bytes:
    """A header block as HEADERS and, past ``max_frame_size``, CONTINUATION frames."""
    flags = FLAG_END_STREAM if end_stream else 0
    if len(block) <= max_frame_size:
        return _HEADER.pack(len(block) << 8 | HEADERS, flags | FLAG_END_HEADERS, stream_id) + block
    parts = [_HEADER.pack(max_frame_size << 8 | HEADERS, flags, stream_id), block[:max_frame_size]]
    pos = max_frame_size
    while pos < len(block):
        chunk = block[pos : pos + max_frame_size]
        pos += len(chunk)
        last = FLAG_END_HEADERS if pos >= len(block) else 0
        parts += (_HEADER.pack(len(chunk) << 8 | CONTINUATION, last, stream_id), chunk)
    return b"".join(parts)


def settings_frame(settings: tuple[tuple[int, int], ...]) -> bytes:
    payload = b"".join(_SETTING.pack(key, value) for key, value in settings)
    return _HEADER.pack(len(payload) << 8 | SETTINGS, 0, 0) + payload


SETTINGS_ACK = _HEADER.pack(SETTINGS, FLAG_ACK, 0)


def ping_frame(opaque: bytes, *, ack: bool = False) -> bytes:
    if len(opaque) != 8:
        raise ValueError("PING opaque data is 8 octets")
    return _HEADER.pack(8 << 8 | PING, FLAG_ACK if ack else 0, 0) + opaque


def rst_stream_frame(stream_id: int, error_code: int) -> bytes:
    return _HEADER.pack(4 << 8 | RST_STREAM, 0, stream_id) + _U32.pack(error_code)


def window_update_frame(stream_id: int, increment: int) -> bytes:
    return _HEADER.pack(4 << 8 | WINDOW_UPDATE, 0, stream_id) + _U32.pack(increment)


def goaway_frame(last_stream_id: int, error_code: int, debug: bytes = b"") -> bytes:
    return (
        _HEADER.pack((8 + len(debug)) << 8 | GOAWAY, 0, 0)
        + _U32X2.pack(last_stream_id, error_code)
        + debug
    )
