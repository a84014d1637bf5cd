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
rejects a frame whose declared length is above our maximum as soon as its header arrives (h2
would buffer the whole frame first).  Runs of frames other than plain DATA (and the server's
connection preface) are handed to h2's own ``receive_data`` unchanged, always whole, so h2's
frame buffer is empty between calls; the splitter holds at most one such incomplete frame.  A
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

#: RFC 9113 section 4.1: frame header length, and the type/flag values the fast path uses.
FRAME_HEADER = 9
TYPE_DATA = 0x0
FLAG_END_STREAM = 0x1
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


#: Bytes for h2's ``receive_data`` (whole frames or preface), or DATA payload.
Segment = bytes | DataSegment


class FrameSplitter:
    """Cut an inbound HTTP/2 byte stream into ``Segment``s; see the module docstring.

    ``preface``: bytes to pass through before the first frame (a server's view of the client
    preface; h2 checks them).  ``max_frame_size`` may be changed between calls.  Held back
    between calls: at most one frame header, or one incomplete frame other than plain DATA.
    """

    def __init__(self, *, preface: int, max_frame_size: int) -> None:
        self.max_frame_size = max_frame_size
        self._preface = preface
        self._partial = bytearray()
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
        """Segments completed by ``data``, in order.  Raises h2's ``FrameTooLargeError``."""
        view = memoryview(data).cast("B")
        out: list[Segment] = []
        if self._preface:
            n = min(self._preface, len(view))
            out.append(bytes(view[:n]))
            self._preface -= n
            view = view[n:]
        if self._data_left:
            view = self._cut_through(view, out)
        if self._partial:
            view = self._complete_partial(view, out)
        pos, raw_from, end = 0, 0, len(view)
        while end - pos >= FRAME_HEADER:
            length = self._check_length(view[pos : pos + 3])
            stop = pos + FRAME_HEADER + length
            plain = self._plain_data(view[pos : pos + FRAME_HEADER])
            if plain is None and stop > end:
                break  # an incomplete frame h2 must see whole
            if plain is not None:
                if raw_from < pos:
                    out.append(bytes(view[raw_from:pos]))
                self._start_data(plain, length)
                pos = end - len(self._cut_through(view[pos + FRAME_HEADER :], out))
                raw_from = pos
                continue
            pos = stop
        if raw_from < pos:
            out.append(bytes(view[raw_from:pos]))
        if pos < end:
            if end - pos >= FRAME_HEADER:
                self._check_length(view[pos : pos + 3])
            self._partial += view[pos:]
        return out

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
            length = self._check_length(head[:3])
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

    def _check_length(self, head: memoryview) -> int:
        length = int.from_bytes(head, "big")
        if length > self.max_frame_size:
            raise h2.exceptions.FrameTooLargeError(
                f"Received overlong frame: length {length}, max {self.max_frame_size}"
            )
        return length

    @staticmethod
    def _plain_data(header: memoryview) -> tuple[int, bool] | None:
        """(stream id, END_STREAM) if the frame with this header takes the fast path."""
        if header[3] != TYPE_DATA or header[4] & FLAG_PADDED:
            return None
        stream_id = int.from_bytes(header[5:9], "big") & 0x7FFFFFFF
        if stream_id == 0:
            return None  # h2 answers with its PROTOCOL_ERROR
        return stream_id, bool(header[4] & FLAG_END_STREAM)


def receive_segments(
    conn: h2.connection.H2Connection, segments: list[Segment]
) -> list[h2.events.Event]:
    """Feed ``segments`` to h2 in order: what ``conn.receive_data`` of their bytes returns."""
    events: list[h2.events.Event] = []
    for segment in segments:
        if isinstance(segment, bytes):
            events += conn.receive_data(segment)
        elif conn.incoming_buffer._headers_buffer:
            events += conn.receive_data(segment.frame_bytes())  # h2's CONTINUATION rule
        else:
            frame = hyperframe.frame.DataFrame(segment.stream_id, segment.payload)
            if segment.end_stream:
                frame.flags.add("END_STREAM")
            try:
                events += conn._receive_frame(frame)
            except h2.exceptions.ProtocolError as exc:
                conn._terminate_connection(exc.error_code)
                raise
    return events


def receive_bytes(
    conn: h2.connection.H2Connection, splitter: FrameSplitter, data: bytes | bytearray | memoryview
) -> list[h2.events.Event]:
    """``conn.receive_data(data)`` with plain DATA frames on the path above."""
    splitter.max_frame_size = conn.max_inbound_frame_size
    try:
        segments = splitter.feed(data)
    except h2.exceptions.ProtocolError as exc:
        conn._terminate_connection(exc.error_code)
        raise
    return receive_segments(conn, segments)
