"""DATA frames framed by us around h2's state machine: the bulk path of a link.

Why: h2 copies every DATA payload about five times on the way out (frame body, header plus
body, its ``_data_to_send``, ``data_to_send()``, our outbound buffer) and three times on the
way in (its frame buffer, the frame slice, ``tobytes``), with a frame object and a generator per
frame: 18-24 us to send and 26-46 us to receive and acknowledge one 64 KiB frame, against
~7 and ~20 us here (CPU-bound micro-measurement, both sides in one process).  Here a DATA
frame is one 9-byte header plus one copy of the payload each way.  h2 stays the authority on
everything else: every other frame, and the *state* of DATA (stream and connection state
machines, both flow-control windows) -- we call into it for that, so the wire and the state
are exactly what ``H2Connection.send_data`` / ``receive_data`` would produce (the tests compare
them byte for byte).

Theory of operation
-------------------
Sending (``send_data_frame``): h2's pending output is moved to ``out`` first (frame order is
the order of calls), then h2's checks and state updates for SEND_DATA run, then the header and
the payload are appended to ``out``.

Receiving: ``FrameSplitter`` (sans-IO) cuts the inbound byte stream at frame boundaries.  It
refuses, as soon as its header arrives (h2 would buffer the whole frame first), a frame whose
declared length is above our maximum and a frame that takes a header block past its bounds
(CONTINUATION frames per block, raw block bytes: CONTINUATION floods); what came before it in
the same read is still passed on, then a ``Refusal`` and nothing more.  Each frame other than
plain DATA (and the server's connection preface) is a segment of its own, handed to h2's own
``receive_data`` unchanged and whole, so h2's frame buffer is empty between calls and the
driver can act on a frame's events (a flood budget crossed) before h2 sees the next frame; the
splitter holds at most one incomplete frame.  A
DATA frame without padding on a stream other than 0 is cut through: its payload becomes one
``DataSegment`` per read it arrives in (never reassembled), each going through h2's per-frame
handler (``_receive_frame``) as if the peer had sent that piece as a frame of its own.  h2
therefore applies the same state and flow-control rules and raises the same errors, and only
the last piece carries END_STREAM.  While h2 is inside a header block (HEADERS without
END_HEADERS) a DATA frame is handed to h2 raw, so its CONTINUATION rule still applies.

The h2 internals used (``_receive_frame``, ``_terminate_connection``, ``_data_to_send``,
``_get_stream_by_id``, the state machines and window attributes) are those of h2 4.x; the
dependency is pinned below 5 for that reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import h2.connection
import h2.events
import h2.exceptions
import h2.stream
import hyperframe.frame

#: RFC 9113 section 4.1: frame header length, and the type/flag values the fast path and the
#: header-block bounds use.
FRAME_HEADER = 9
TYPE_DATA = 0x0
TYPE_HEADERS = 0x1
TYPE_PUSH_PROMISE = 0x5
TYPE_CONTINUATION = 0x9
FLAG_END_STREAM = 0x1
FLAG_END_HEADERS = 0x4
FLAG_PADDED = 0x8
#: RFC 9113 section 3.4: what a client sends before its first frame.
CLIENT_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

_SEND_DATA = h2.connection.ConnectionInputs.SEND_DATA
_STREAM_SEND_DATA = h2.stream.StreamInputs.SEND_DATA
_STREAM_SEND_END_STREAM = h2.stream.StreamInputs.SEND_END_STREAM


def data_frame_header(length: int, stream_id: int, flags: int = 0) -> bytes:
    return (
        length.to_bytes(3, "big")
        + bytes((TYPE_DATA, flags))
        + (stream_id & 0x7FFFFFFF).to_bytes(4, "big")
    )


def send_data_frame(
    conn: h2.connection.H2Connection,
    out: bytearray,
    stream_id: int,
    payload: bytes | bytearray | memoryview,
    *,
    end_stream: bool = False,
) -> None:
    """Append h2's pending output, then one DATA frame carrying ``payload``, to ``out``.

    Same checks, state changes and errors as ``conn.send_data(stream_id, payload,
    end_stream=end_stream)`` (``FlowControlError``, ``FrameTooLargeError``,
    ``StreamClosedError``, ``ProtocolError``).
    """
    size = len(payload)
    stream = conn._get_stream_by_id(stream_id)
    if size > min(conn.outbound_flow_control_window, stream.outbound_flow_control_window):
        raise h2.exceptions.FlowControlError(f"cannot send {size} bytes on stream {stream_id}")
    if size > conn.max_outbound_frame_size:
        raise h2.exceptions.FrameTooLargeError(f"cannot send a {size}-byte frame")
    conn.state_machine.process_input(_SEND_DATA)
    stream.state_machine.process_input(_STREAM_SEND_DATA)
    if end_stream:
        stream.state_machine.process_input(_STREAM_SEND_END_STREAM)
    stream.outbound_flow_control_window -= size
    conn.outbound_flow_control_window -= size
    if conn._data_to_send:
        out += conn._data_to_send
        conn._data_to_send = bytearray()
    out += data_frame_header(size, stream_id, FLAG_END_STREAM if end_stream else 0)
    out += payload


@dataclass(frozen=True, slots=True)
class DataSegment:
    """Payload of a plain DATA frame (no padding, stream id not 0), copied out once.

    A frame whose payload spans reads is passed on piece by piece as it arrives (cut-through:
    nothing is held back to reassemble it); ``end_stream`` is set on the last piece only.  To
    h2 and to the stream this is the same as the peer having sent smaller frames.
    """

    stream_id: int
    end_stream: bool
    payload: bytes

    def frame_bytes(self) -> bytes:
        flags = FLAG_END_STREAM if self.end_stream else 0
        return data_frame_header(len(self.payload), self.stream_id, flags) + self.payload


@dataclass(frozen=True, slots=True)
class Refusal:
    """The frame whose header arrived here breaks a bound: the connection ends with ``error``
    (its ``error_code`` goes in the GOAWAY).  Always the last segment of a splitter."""

    error: h2.exceptions.ProtocolError


#: Bytes for h2's ``receive_data`` (one whole frame, or preface), DATA payload, or the end.
Segment = bytes | DataSegment | Refusal


class _Refused(Exception):
    def __init__(self, error: h2.exceptions.ProtocolError) -> None:
        self.error = error


class FrameSplitter:
    """Cut an inbound HTTP/2 byte stream into ``Segment``s; see the module docstring.

    ``preface``: bytes to pass through before the first frame (a server's view of the client
    preface; h2 checks them).  ``max_frame_size`` may be changed between calls.  Held back
    between calls: at most one frame header, or one incomplete frame other than plain DATA.
    ``max_continuation_frames`` / ``max_header_block_bytes``: bounds of one header block
    (None: unbounded here; h2 still stops at 64 CONTINUATION frames).
    """

    def __init__(
        self,
        *,
        preface: int,
        max_frame_size: int,
        max_continuation_frames: int | None = None,
        max_header_block_bytes: int | None = None,
    ) -> None:
        self.max_frame_size = max_frame_size
        self.max_continuation_frames = max_continuation_frames
        self.max_header_block_bytes = max_header_block_bytes
        self._preface = preface
        self._partial = bytearray()
        self._refused = False
        # The header block in progress (HEADERS or PUSH_PROMISE without END_HEADERS so far).
        self._in_block = False
        self._block_frames = 0
        self._block_bytes = 0
        # The plain DATA frame being cut through: payload bytes still to come, its stream and
        # whether it carries END_STREAM.
        self._data_left = 0
        self._data_stream = 0
        self._data_end = False

    @property
    def buffered(self) -> int:
        """Bytes held here: a partial frame header, or an incomplete non-DATA frame."""
        return len(self._partial)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Segment]:
        """Segments completed by ``data``, in order; a ``Refusal`` ends them (and the splitter:
        later calls return nothing)."""
        out: list[Segment] = []
        if self._refused:
            return out
        try:
            self._feed(memoryview(data).cast("B"), out)
        except _Refused as refused:
            self._refused = True
            out.append(Refusal(refused.error))
        return out

    def _feed(self, view: memoryview, out: list[Segment]) -> None:
        if self._preface:
            n = min(self._preface, len(view))
            out.append(bytes(view[:n]))
            self._preface -= n
            view = view[n:]
        if self._data_left:
            view = self._cut_through(view, out)
        if self._partial:
            view = self._complete_partial(view, out)
        pos, end = 0, len(view)
        while end - pos >= FRAME_HEADER:
            header = view[pos : pos + FRAME_HEADER]
            length = self._check_length(header)
            stop = pos + FRAME_HEADER + length
            plain = self._plain_data(header)
            if plain is None and stop > end:
                break  # an incomplete frame h2 must see whole
            if plain is not None:
                self._start_data(plain, length)
                pos = end - len(self._cut_through(view[pos + FRAME_HEADER :], out))
                continue
            out.append(bytes(view[pos:stop]))
            pos = stop
        if pos < end:  # (a whole header here was checked in the loop)
            self._partial += view[pos:]

    def _start_data(self, header: tuple[int, bool], length: int) -> None:
        self._data_stream, self._data_end = header
        self._data_left = length

    def _cut_through(self, view: memoryview, out: list[Segment]) -> memoryview:
        """Pass on what ``view`` holds of the current DATA frame; return the rest of ``view``.

        A frame with an empty payload still yields one (empty) segment: it may carry
        END_STREAM, and h2 counts empty DATA frames.
        """
        n = min(self._data_left, len(view))
        if n or self._data_left == 0:
            self._data_left -= n
            end = self._data_end and not self._data_left
            out.append(DataSegment(self._data_stream, end, bytes(view[:n])))
        return view[n:]

    def _complete_partial(self, view: memoryview, out: list[Segment]) -> memoryview:
        partial = self._partial
        if len(partial) < FRAME_HEADER:
            take = min(FRAME_HEADER - len(partial), len(view))
            partial += view[:take]
            view = view[take:]
            if len(partial) < FRAME_HEADER:
                return view
            with memoryview(partial) as head:
                self._check_length(head[:FRAME_HEADER])  # first complete look at this header
        with memoryview(partial) as head:
            length = int.from_bytes(head[:3], "big")
            plain = self._plain_data(head[:FRAME_HEADER])
        if plain is not None:  # a DATA frame whose header was split: cut through from here
            partial.clear()
            self._start_data(plain, length)
            return self._cut_through(view, out)
        need = FRAME_HEADER + length - len(partial)
        take = min(need, len(view))
        partial += view[:take]
        if take < need:
            return view[take:]
        out.append(bytes(partial))
        partial.clear()
        return view[take:]

    def _check_length(self, header: memoryview) -> int:
        """The frame's length, once its whole header is here; refuses it if it is overlong or
        takes a header block past its bounds.  Called exactly once per frame header."""
        length = int.from_bytes(header[:3], "big")
        if length > self.max_frame_size:
            raise _Refused(
                h2.exceptions.FrameTooLargeError(
                    f"Received overlong frame: length {length}, max {self.max_frame_size}"
                )
            )
        kind = header[3]
        if kind == TYPE_CONTINUATION:
            if self._in_block:  # (a stray one is h2's PROTOCOL_ERROR)
                self._block_frames += 1
                self._block_bytes += length
                self._in_block = not header[4] & FLAG_END_HEADERS
                self._check_block()
        elif kind in (TYPE_HEADERS, TYPE_PUSH_PROMISE):
            self._block_frames = 0
            self._block_bytes = length
            self._in_block = not header[4] & FLAG_END_HEADERS
            self._check_block()
        return length

    def _check_block(self) -> None:
        most = self.max_continuation_frames
        if most is not None and self._block_frames > most:
            raise _Refused(
                h2.exceptions.DenialOfServiceError(
                    f"more than {most} CONTINUATION frames in one header block"
                )
            )
        most = self.max_header_block_bytes
        if most is not None and self._block_bytes > most:
            raise _Refused(
                h2.exceptions.DenialOfServiceError(
                    f"header block larger than {most} bytes before decoding"
                )
            )

    @staticmethod
    def _plain_data(header: memoryview) -> tuple[int, bool] | None:
        """(stream id, END_STREAM) if the frame with this header takes the fast path."""
        if header[3] != TYPE_DATA or header[4] & FLAG_PADDED:
            return None
        stream_id = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
        if stream_id == 0:
            return None  # h2 answers with its PROTOCOL_ERROR
        return stream_id, bool(header[4] & FLAG_END_STREAM)


def receive_segment(conn: h2.connection.H2Connection, segment: Segment) -> list[h2.events.Event]:
    """Feed one segment to h2: what ``conn.receive_data`` of its bytes returns.  A
    ``Refusal`` queues h2's GOAWAY with its code and raises its error."""
    if isinstance(segment, bytes):
        return conn.receive_data(segment)
    if isinstance(segment, Refusal):
        conn._terminate_connection(segment.error.error_code)
        raise segment.error
    if conn.incoming_buffer._headers_buffer:
        return conn.receive_data(segment.frame_bytes())  # h2's CONTINUATION rule
    frame = hyperframe.frame.DataFrame(segment.stream_id, segment.payload)
    if segment.end_stream:
        frame.flags.add("END_STREAM")
    try:
        return conn._receive_frame(frame)
    except h2.exceptions.ProtocolError as exc:
        conn._terminate_connection(exc.error_code)
        raise


def feed_splitter(
    conn: h2.connection.H2Connection, splitter: FrameSplitter, data: bytes | bytearray | memoryview
) -> list[Segment]:
    """The segments of ``data``, with the frame size bound h2 currently enforces."""
    splitter.max_frame_size = conn.max_inbound_frame_size
    return splitter.feed(data)


def receive_bytes(
    conn: h2.connection.H2Connection, splitter: FrameSplitter, data: bytes | bytearray | memoryview
) -> list[h2.events.Event]:
    """``conn.receive_data(data)`` with plain DATA frames on the path above (all frames at
    once: the driver goes frame by frame with ``feed_splitter`` and ``receive_segment``)."""
    events: list[h2.events.Event] = []
    for segment in feed_splitter(conn, splitter, data):
        events += receive_segment(conn, segment)
    return events
