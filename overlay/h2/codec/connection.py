"""A sans-IO HTTP/2 connection for links: streams, header blocks and flow control on top of
``control.ConnectionControl`` (preface, SETTINGS, PING, GOAWAY).

Why: a link is one long-lived connection between two Isthmus gateways carrying every tunnel
of a site; h2's generality (and its cost per frame) buys nothing there.  This keeps RFC 9113's
rules and our limits, and leaves every policy (when to credit a window, how many streams a
caller may hold) to the owner.

Theory of operation
-------------------
Bounds.  Our SETTINGS always carry MAX_CONCURRENT_STREAMS (100 unless given) and
MAX_HEADER_LIST_SIZE (at most ``max_header_list_size``, which the HPACK decoder enforces from
the start); stream state is a few integers per stream, reset streams are remembered up to
``max_reset_memory``; what we queue to send (our answers included) is at most
``max_queued_frames`` frames between two ``data_to_send`` calls.

Streams.  A stream is *open for receiving* until the peer ends it (END_STREAM) and *open for
sending* until we end it; it is forgotten when both are over or either side resets it.
Streams we reset are remembered (a bounded FIFO of ``max_reset_memory`` IDs) so that frames
the peer sent before it saw our RST_STREAM are dropped quietly (RFC 9113 5.1, "closed"); any
other frame on a stream that is gone is a connection error STREAM_CLOSED, and one on a stream
that was never opened (idle) a PROTOCOL_ERROR.  A peer may open only streams of its parity, in
increasing order (5.1.1); over our MAX_CONCURRENT_STREAMS a new stream is refused with
RST_STREAM REFUSED_STREAM, its header block still decoded (the HPACK table is shared).  Push is
never accepted: we do not enable it, so PUSH_PROMISE is a PROTOCOL_ERROR (8.4).

Header blocks.  A block arrives whole (``inbound.py``) and is always decoded first.  On a new
stream it is a request (server side); on our stream a response (client side), a 1xx
informational response any number of times before it; a later block is trailers and must end
the stream (8.1).

Flow control.  Receiving: every DATA frame's whole payload (padding included) is charged to
the connection window and the stream's; going below zero is FLOW_CONTROL_ERROR (connection
error on the connection, stream error on a stream).  Nothing is credited back automatically
except padding and DATA that is dropped (on a stream we reset or refused): the owner calls
``credit_connection`` / ``credit_stream`` when it has taken the bytes, which is what makes a
slow reader slow its own writer.  Sending: ``send_data`` takes at most what both windows allow
and says how much it took; WINDOW_UPDATE grows them (2**31-1 at most: FLOW_CONTROL_ERROR); a
change of the peer's INITIAL_WINDOW_SIZE moves every stream's send window by the difference
(6.9.2), ours moves every receive window when the peer acknowledges it.

Settings take effect as ``control.py`` says: the peer's at once (the HPACK encoder's table
size, frame size for what we send), ours on acknowledgement (the HPACK decoder's table limit,
the frame size we accept, stream receive windows).

Not here, on purpose: HTTP field rules (pseudo-headers, connection-specific fields, what may
become an HTTP/1.1 head) are ``overlay/h2/field_rules.py``'s, applied by the owner to the
decoded lists; priority is ignored; push is refused.

Where h2 differs (its behaviour is the test oracle everywhere else, see
``tests/overlay/h2/codec/test_connection.py``): h2 refuses every frame after a GOAWAY (we go on,
so streams below its last stream ID can finish); h2 applies a MAX_FRAME_SIZE it sent only from
its next ``receive_data`` call after our acknowledgement (we may use it right after the ACK, as
RFC 9113 6.5.3 allows); a stream window overflow, DATA after END_STREAM or before a response's
HEADERS are stream errors here (RST_STREAM; the link keeps serving the other streams).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import replace

from foundation.errors import H2_FLOW_CONTROL_ERROR, H2_PROTOCOL_ERROR, H2_REFUSED_STREAM
from overlay.h2.codec import control as c
from overlay.h2.codec import frames as fr
from overlay.h2.codec.errors import (
    H2_STREAM_CLOSED,
    CodecError,
    FlowControlError,
    LocalStreamError,
    StreamClosedError,
)
from overlay.h2.codec.hpack import Decoder, Encoder, Header
from overlay.h2.codec.settings import MAX_WINDOW, Settings
from overlay.h2.codec.stream_events import (
    DataReceived,
    Event,
    InformationalResponseReceived,
    RequestReceived,
    ResponseReceived,
    StreamEnded,
    StreamRefused,
    StreamReset,
    TrailersReceived,
)

__all__ = [
    "Connection",
    "DataReceived",
    "Event",
    "FlowControlError",
    "InformationalResponseReceived",
    "LocalStreamError",
    "RequestReceived",
    "ResponseReceived",
    "StreamClosedError",
    "StreamEnded",
    "StreamRefused",
    "StreamReset",
    "TrailersReceived",
]

DEFAULT_MAX_CONCURRENT_STREAMS = 100


class _Stream:
    __slots__ = ("headers_in", "recv_open", "recv_window", "send_open", "send_window")

    def __init__(self, send_window: int, recv_window: int) -> None:
        self.recv_open = True
        self.send_open = True
        self.send_window = send_window
        self.recv_window = recv_window
        self.headers_in = 0  # final (non-1xx) header blocks received


class Connection:
    """One HTTP/2 connection's protocol state; see the module docstring."""

    def __init__(
        self,
        *,
        client: bool,
        local: Settings,
        max_header_list_size: int = 64 * 1024,
        max_reset_memory: int = 1000,
        header_list_cap: int | None = None,
    ) -> None:
        # Push is never accepted; and a link always states its bounds (the RFC's "unlimited"
        # defaults would let a peer open streams and send header lists without end).
        local = replace(
            local,
            enable_push=False,
            max_concurrent_streams=(
                DEFAULT_MAX_CONCURRENT_STREAMS
                if local.max_concurrent_streams is None
                else local.max_concurrent_streams
            ),
            max_header_list_size=min(
                max_header_list_size,
                max_header_list_size
                if local.max_header_list_size is None
                else local.max_header_list_size,
            ),
        )
        self.client = client
        self.control = c.ConnectionControl(client=client, local=local)
        self.encoder = Encoder()
        # ``header_list_cap``: where decoding stops, if above the advertised limit.  The owner
        # then sees a list over the limit whole (``decoder.list_size``) and may refuse that
        # stream alone; only a list past the cap (an HPACK bomb) ends the connection.
        self.header_list_cap = header_list_cap
        self.decoder = Decoder(max_header_list_size=header_list_cap or max_header_list_size)
        self.hard_header_list_size = max_header_list_size
        self.streams: dict[int, _Stream] = {}
        self._open = [0, 0]  # open streams by parity: [even, odd]
        self.recv_window = 65535
        self._highest_in = 0
        self._next_out = 1 if client else 2
        self._reset: deque[int] = deque()
        self._reset_set: set[int] = set()
        self.max_reset_memory = max_reset_memory
        self._acked_initial = 65535  # our INITIAL_WINDOW_SIZE as the peer acknowledged it
        self.max_queued_frames = 10_000
        self._out: list[bytes] = []

    # -- sending ------------------------------------------------------------------------------

    def initiate(self) -> None:
        self.control.initiate()

    def data_to_send(self) -> bytes:
        control = self.control.data_to_send()
        if not self._out:
            return control
        out = control + b"".join(self._out)
        self._out.clear()
        return out

    def next_stream_id(self) -> int:
        return self._next_out

    def send_headers(self, stream_id: int, headers: Iterable[Header], *, end_stream: bool) -> None:
        stream = self.streams.get(stream_id)
        if stream is None:
            if stream_id != self._next_out:
                raise LocalStreamError(f"stream {stream_id} is not the next one ({self._next_out})")
            limit = self.control.remote.max_concurrent_streams
            if limit is not None and self._open_streams(local=True) >= limit:
                raise LocalStreamError(f"the peer allows {limit} concurrent streams")
            self._next_out += 2
            stream = _Stream(
                self.control.remote.initial_window_size, self.control.local.initial_window_size
            )
            self.streams[stream_id] = stream
            self._open[stream_id & 1] += 1
        elif not stream.send_open:
            raise LocalStreamError(f"stream {stream_id} is closed for sending")
        block = self.encoder.encode(headers)
        self._out.append(
            fr.headers_frames(
                stream_id,
                block,
                end_stream=end_stream,
                max_frame_size=self.control.remote.max_frame_size,
            )
        )
        if end_stream:
            self._end_sending(stream_id, stream)

    def sendable(self, stream_id: int) -> int:
        """How many DATA bytes the windows allow on the stream now."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.send_open:
            return 0
        return max(0, min(self.control.send_window, stream.send_window))

    def send_data(self, stream_id: int, data: bytes, *, end_stream: bool = False) -> int:
        """Send as much of ``data`` as the windows allow (END_STREAM only if all of it went);
        returns how many bytes were taken."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.send_open:
            raise LocalStreamError(f"stream {stream_id} is not open for sending")
        take = min(len(data), max(0, min(self.control.send_window, stream.send_window)))
        size = self.control.remote.max_frame_size
        pos = 0
        while pos < take:
            chunk = data[pos : min(take, pos + size)]
            pos += len(chunk)
            last = end_stream and pos == len(data)
            self._out.append(fr.data_frame(stream_id, chunk, end_stream=last))
        self.control.send_window -= take
        stream.send_window -= take
        if end_stream and take == len(data):
            if not data:
                self._out.append(fr.data_frame(stream_id, b"", end_stream=True))
            self._end_sending(stream_id, stream)
        return take

    def send_data_into(
        self,
        out: bytearray,
        stream_id: int,
        payload: bytes | bytearray | memoryview,
        *,
        end_stream: bool = False,
    ) -> None:
        """Append what is queued, then ``payload`` as one DATA frame, to ``out``: the bulk
        path, one copy of the payload.  The caller keeps ``payload`` within :meth:`sendable`
        and the peer's frame size (``ValueError`` otherwise); the wire is what
        :meth:`send_data` would give for it."""
        stream = self.streams.get(stream_id)
        if stream is None or not stream.send_open:
            raise LocalStreamError(f"stream {stream_id} is not open for sending")
        size = len(payload)
        control = self.control
        if size > control.send_window or size > stream.send_window:
            raise ValueError(f"{size} bytes on stream {stream_id}: over the send window")
        if size > control.remote.max_frame_size:
            raise ValueError(f"a DATA frame of {size} bytes: over the peer's frame size")
        queued = self.data_to_send()
        if queued:
            out += queued
        out += fr.frame_header(size, fr.DATA, fr.FLAG_END_STREAM if end_stream else 0, stream_id)
        out += payload
        control.send_window -= size
        stream.send_window -= size
        if end_stream:
            self._end_sending(stream_id, stream)

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        if self._drop(stream_id) is None:
            raise LocalStreamError(f"stream {stream_id} is not open")
        self._out.append(fr.rst_stream_frame(stream_id, error_code))
        self._remember_reset(stream_id)

    def credit_connection(self, n: int) -> None:
        """The owner has taken ``n`` bytes off the wire: the peer may send them again."""
        if n > 0:
            self.recv_window += n
            self._out.append(fr.window_update_frame(0, n))

    def credit_stream(self, stream_id: int, n: int) -> None:
        """The stream's consumer has taken ``n`` bytes (nothing is sent for a stream that the
        peer has ended or that is gone: it will not send more)."""
        stream = self.streams.get(stream_id)
        if n > 0 and stream is not None and stream.recv_open:
            stream.recv_window += n
            self._out.append(fr.window_update_frame(stream_id, n))

    def ping(self, opaque: bytes) -> None:
        self.control.ping(opaque)

    def update_settings(self, settings: Settings) -> None:
        self.control.update_settings(settings)

    def close(self, error_code: int = 0, debug: bytes = b"") -> None:
        """Queue GOAWAY naming the last stream the peer opened that we may have processed."""
        self._out.append(fr.goaway_frame(self._highest_in, error_code, debug))

    # -- receiving ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        self.receive_data_into(data, events)
        return events

    def receive_data_into(self, data: bytes, events: list[Event]) -> None:
        """Process received bytes, appending each frame's events as it is handled (after an
        error, ``events`` holds those of every frame before the bad one)."""
        self.feed(data)
        step = self.step
        while step(events):
            pass

    def feed(self, data: bytes | bytearray) -> None:
        """Take received bytes; :meth:`step` then handles the frames they complete.  An owner
        that must act on a frame before the next is looked at (a flood budget crossed) steps
        frame by frame instead of calling ``receive_data``."""
        self.control.inbound.receive_data(data)

    def step(self, events: list[Event]) -> bool:
        """Handle the next complete frame, appending its events; False when none is left."""
        frame = self.control.inbound.next_frame()
        if frame is None:
            return False
        control = self.control
        before = len(events)
        # DATA and HEADERS (most frames of a link) go straight to the stream layer once the
        # peer's preface is in; the rest first passes the connection level.
        if control.settled and type(frame) is fr.DataFrame:
            self._data(frame, events)
        elif control.settled and type(frame) is fr.HeadersFrame:
            self._headers(frame, events)
        elif control.handle_frame(frame, events.append):
            if len(events) > before:
                self._after_control(events[-1])
            return True
        else:
            self._stream_frame(frame, events)
        if len(self._out) > self.max_queued_frames:
            raise c.ControlFlood(
                f"over {self.max_queued_frames} frames queued: the peer makes us answer "
                "(resets, window updates) faster than what we write is taken"
            )
        return True

    def _after_control(self, event: Event) -> None:
        if isinstance(event, c.RemoteSettingsChanged):
            old, new = event.previous, event.settings
            if new.header_table_size != old.header_table_size:
                self.encoder.set_peer_table_size(new.header_table_size)
            delta = new.initial_window_size - old.initial_window_size
            if delta:
                for stream in self.streams.values():
                    stream.send_window += delta
                    if stream.send_window > MAX_WINDOW:
                        raise FlowControlError("INITIAL_WINDOW_SIZE pushes a window over 2**31-1")
        elif isinstance(event, c.SettingsAcknowledged):
            ours = event.settings
            self.decoder.max_allowed_table_size = ours.header_table_size
            if ours.max_header_list_size is not None and self.header_list_cap is None:
                self.decoder.max_header_list_size = min(
                    ours.max_header_list_size, self.hard_header_list_size
                )
            delta = ours.initial_window_size - self._acked_initial
            self._acked_initial = ours.initial_window_size
            for stream in self.streams.values():
                stream.recv_window += delta

    def _stream_frame(self, frame: fr.Frame, events: list[Event]) -> None:
        if isinstance(frame, fr.DataFrame):
            self._data(frame, events)
        elif isinstance(frame, fr.HeadersFrame):
            self._headers(frame, events)
        elif isinstance(frame, fr.RstStreamFrame):
            stream = self._drop(frame.stream_id)
            if stream is not None:
                events.append(StreamReset(frame.stream_id, frame.error_code))
            elif self._is_idle(frame.stream_id):
                raise CodecError(f"RST_STREAM on idle stream {frame.stream_id}")
            # else closed: a reset crossing our END_STREAM or RST_STREAM (RFC 9113 5.1)
        elif isinstance(frame, fr.WindowUpdateFrame):
            self._window_update(frame, events)
        elif isinstance(frame, fr.PushPromiseFrame):
            raise CodecError("PUSH_PROMISE, but we never enable push")
        elif isinstance(frame, fr.PriorityFrame):
            # Deprecated (RFC 9113 5.3.2), valid on any stream: ignored, but reported.
            events.append(c.FrameIgnored(fr.PRIORITY, frame.stream_id))

    def _existing(self, stream_id: int) -> _Stream | None:
        """The stream, or None for one we reset (drop the frame); raises for a stream that is
        idle (PROTOCOL_ERROR) or closed without our reset (STREAM_CLOSED)."""
        stream = self.streams.get(stream_id)
        if stream is not None:
            return stream
        if stream_id in self._reset_set:
            return None
        if self._is_idle(stream_id):
            raise CodecError(f"frame on idle stream {stream_id}")
        raise StreamClosedError(f"frame on closed stream {stream_id}")

    def _is_idle(self, stream_id: int) -> bool:
        ours = (stream_id % 2 == 1) == self.client
        return stream_id >= self._next_out if ours else stream_id > self._highest_in

    def _headers(self, frame: fr.HeadersFrame, events: list[Event]) -> None:
        headers = self.decoder.decode(frame.fragment)  # always: the table is shared
        sid = frame.stream_id
        stream = self.streams.get(sid)
        if stream is None:
            peers = (sid % 2 == 1) != self.client
            if not peers or sid <= self._highest_in:
                self._existing(sid)  # raises unless we reset it
                return
            self._highest_in = sid
            if self.client:
                raise CodecError(f"the server opened stream {sid}")
            limit = self.control.local.max_concurrent_streams
            if limit is not None and self._open_streams(local=False) >= limit:
                self._out.append(fr.rst_stream_frame(sid, H2_REFUSED_STREAM))
                self._remember_reset(sid)
                events.append(StreamRefused(sid))
                return
            stream = _Stream(
                self.control.remote.initial_window_size, self.control.local.initial_window_size
            )
            self.streams[sid] = stream
            self._open[sid & 1] += 1
            stream.headers_in = 1
            events.append(RequestReceived(sid, headers, frame.end_stream))
        elif not stream.recv_open:
            self._stream_error(sid, H2_STREAM_CLOSED, events)
            return
        elif stream.headers_in:
            if not frame.end_stream:
                raise CodecError(f"trailers without END_STREAM on stream {sid}")
            events.append(TrailersReceived(sid, headers))
        elif self.client and _informational(headers):
            if frame.end_stream:
                raise CodecError(f"1xx response ending stream {sid}")
            events.append(InformationalResponseReceived(sid, headers))
            return
        else:
            stream.headers_in = 1
            events.append(ResponseReceived(sid, headers, frame.end_stream))
        if frame.end_stream:
            self._end_receiving(sid, stream, events)

    def _data(self, frame: fr.DataFrame, events: list[Event]) -> None:
        n = frame.flow_length
        if n > self.recv_window:
            raise FlowControlError(f"DATA of {n} bytes over the connection window")
        self.recv_window -= n
        sid = frame.stream_id
        stream = self._existing(sid)
        if stream is None:  # a stream we reset: drop, and credit what nobody else will
            self.credit_connection(n)
            return
        if not stream.recv_open or not stream.headers_in:
            # After END_STREAM (half-closed remote) or before the response's HEADERS.
            self.credit_connection(n)
            self._stream_error(
                sid, H2_STREAM_CLOSED if stream.headers_in else H2_PROTOCOL_ERROR, events
            )
            return
        if n > stream.recv_window:
            self.credit_connection(n)
            self._stream_error(sid, H2_FLOW_CONTROL_ERROR, events)
            return
        stream.recv_window -= n
        padding = n - len(frame.data)
        if padding:
            self.credit_connection(padding)
            if not frame.end_stream:
                self.credit_stream(sid, padding)
        events.append(DataReceived(sid, frame.data, len(frame.data), frame.end_stream))
        if frame.end_stream:
            self._end_receiving(sid, stream, events)

    def _window_update(self, frame: fr.WindowUpdateFrame, events: list[Event]) -> None:
        sid = frame.stream_id
        stream = self._existing_for_window(sid)
        if stream is None:
            return
        if not frame.increment:
            self._stream_error(sid, H2_PROTOCOL_ERROR, events)
            return
        window = stream.send_window + frame.increment
        if window > MAX_WINDOW:
            self._stream_error(sid, H2_FLOW_CONTROL_ERROR, events)
            return
        stream.send_window = window
        events.append(c.WindowUpdated(sid, frame.increment))

    def _existing_for_window(self, sid: int) -> _Stream | None:
        # WINDOW_UPDATE may arrive on a stream the peer has ended or we have closed for sending
        # and forgotten (RFC 9113 5.1: allowed in half-closed and closed states).
        stream = self.streams.get(sid)
        if stream is not None:
            return stream
        if self._is_idle(sid):
            raise CodecError(f"WINDOW_UPDATE on idle stream {sid}")
        return None

    # -- stream bookkeeping ---------------------------------------------------------------------

    def _stream_error(self, sid: int, code: int, events: list[Event]) -> None:
        """A stream error (RFC 9113 5.4.2): reset the stream, and tell the owner."""
        self.reset_stream(sid, code)
        events.append(StreamReset(sid, code, remote=False))

    def _end_receiving(self, sid: int, stream: _Stream, events: list[Event]) -> None:
        stream.recv_open = False
        events.append(StreamEnded(sid))
        if not stream.send_open:
            self._drop(sid)

    def _end_sending(self, sid: int, stream: _Stream) -> None:
        stream.send_open = False
        if not stream.recv_open:
            self._drop(sid)

    def _remember_reset(self, sid: int) -> None:
        self._reset.append(sid)
        self._reset_set.add(sid)
        if len(self._reset) > self.max_reset_memory:
            self._reset_set.discard(self._reset.popleft())

    def _drop(self, sid: int) -> _Stream | None:
        stream = self.streams.pop(sid, None)
        if stream is not None:
            self._open[sid & 1] -= 1
        return stream

    def _open_streams(self, *, local: bool) -> int:
        return self._open[1 if local == self.client else 0]


def _informational(headers: list[Header]) -> bool:
    for name, value in headers:
        if name == b":status":
            return len(value) == 3 and value[:1] == b"1"
    return False
