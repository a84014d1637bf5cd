"""The ``"lean"`` protocol engine: our codec (``overlay/h2/codec``) behind
``engine.ProtocolEngine``, with the codec's events routed to the driver.

Why: both ends of a link are Isthmus gateways; h2's generality costs several times what the
codec does per exchange (``scripts/bench_h2_codec.py``).  The driver's policy is unchanged:
this file only translates, and adds what h2 did for the driver that the codec leaves to its
owner -- HTTP field rules on received blocks (``received_fields.py``: a malformed block resets
its stream, as with h2), a header list over our advertised limit refused alone (431 for a
request), and the connection's WINDOW_UPDATEs batched as h2's window manager batches them.

Theory of operation
-------------------
Settings: ours are ``H2Limits``' (concurrency, stream window, frame size, header list; the
connection window is widened at start).  The HPACK decoder stops at ``max_decoded_header_list``
(an HPACK bomb ends the connection); a list over ``max_header_list_size`` but under that was
decoded whole, so only its stream is refused.

Receiving: the codec is fed each read and stepped one frame at a time; the events of a frame
go to the driver before the next frame is looked at, and the loop stops once the driver is
closing.  Counted against the peer, as the h2 engine counts them: PING, SETTINGS, PRIORITY,
unknown-type and empty DATA frames (control frames); streams refused over our limit, malformed
and oversized blocks (premature resets).

Window credit: the driver credits the connection on receipt and a stream on consumption
(``credit.py``'s policy).  The connection's credit is handed back once it reaches half the
connection window (h2's ``WindowManager`` rule: the peer always has at least half a window
left, and a busy link sends a WINDOW_UPDATE per half window instead of one per DATA frame); a
stream's, exactly as its window policy decides (``window_policy.py`` batches it the same way,
and grows or shrinks the window).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from foundation.errors import H2_PROTOCOL_ERROR
from overlay.h2.codec import control as c
from overlay.h2.codec import stream_events as se
from overlay.h2.codec.connection import Connection, LocalStreamError
from overlay.h2.codec.errors import CodecError
from overlay.h2.codec.settings import Settings
from overlay.h2.engine import EngineRefused, EngineStreamClosed, PeerProtocolError
from overlay.h2.limits import H2Limits
from overlay.h2.received_fields import check_received
from overlay.h2.stream import HeaderList

if TYPE_CHECKING:
    from overlay.h2.connection import H2Connection

#: Until the peer's SETTINGS arrive its concurrency is formally unlimited.
_UNLIMITED = 2**31 - 1


class LeanEngine:
    """``ProtocolEngine`` on the codec (see the module docstring)."""

    def __init__(self, *, client_side: bool, limits: H2Limits) -> None:
        self.limits = limits
        local = Settings(
            enable_push=False,
            max_concurrent_streams=limits.max_concurrent_streams,
            initial_window_size=limits.stream_window,
            max_frame_size=limits.max_frame_size,
            max_header_list_size=limits.max_header_list_size,
            enable_connect_protocol=not client_side and limits.enable_connect_protocol,
        )
        self.codec = Connection(
            client=client_side,
            local=local,
            max_header_list_size=limits.max_header_list_size,
            header_list_cap=limits.max_decoded_header_list,
        )
        inbound = self.codec.control.inbound
        inbound.max_continuations = limits.max_continuation_frames
        inbound.max_block_bytes = limits.max_header_block_bytes
        self._events: list[se.Event] = []
        self._connection_credit = 0
        self._connection_due = limits.connection_window // 2

    # -- sending ------------------------------------------------------------------------------

    def start(self) -> None:
        codec = self.codec
        codec.initiate()
        extra = self.limits.connection_window - codec.recv_window
        if extra > 0:
            codec.credit_connection(extra)

    def data_to_send(self) -> bytes:
        return self.codec.data_to_send()

    @property
    def open_outbound_streams(self) -> int:
        return self.codec._open_streams(local=True)

    @property
    def peer_max_concurrent_streams(self) -> int:
        limit = self.codec.control.remote.max_concurrent_streams
        return _UNLIMITED if limit is None else limit

    @property
    def peer_enables_connect_protocol(self) -> bool:
        return self.codec.control.remote.enable_connect_protocol

    @property
    def max_outbound_frame_size(self) -> int:
        return self.codec.control.remote.max_frame_size

    def open_stream(self, headers: HeaderList, end_stream: bool) -> int:
        codec = self.codec
        stream_id = codec.next_stream_id()
        try:
            codec.send_headers(stream_id, headers, end_stream=end_stream)
        except LocalStreamError as exc:
            raise EngineRefused(str(exc)) from exc
        return stream_id

    def send_headers(self, stream_id: int, headers: HeaderList, end_stream: bool) -> None:
        if stream_id not in self.codec.streams:
            raise EngineRefused(f"stream {stream_id} is closed")
        try:
            self.codec.send_headers(stream_id, headers, end_stream=end_stream)
        except LocalStreamError as exc:
            raise EngineRefused(str(exc)) from exc

    def send_window(self, stream_id: int) -> int:
        stream = self.codec.streams.get(stream_id)
        if stream is None:
            raise EngineStreamClosed(f"stream {stream_id} is closed")
        if not stream.send_open:
            raise EngineRefused(f"stream {stream_id} is closed for sending")
        return max(0, min(self.codec.control.send_window, stream.send_window))

    def send_data(
        self,
        out: bytearray,
        stream_id: int,
        payload: bytes | bytearray | memoryview,
        end_stream: bool = False,
    ) -> None:
        try:
            self.codec.send_data_into(out, stream_id, payload, end_stream=end_stream)
        except LocalStreamError as exc:
            raise EngineStreamClosed(str(exc)) from exc
        except ValueError as exc:
            raise EngineRefused(str(exc)) from exc

    def end_stream(self, stream_id: int) -> None:
        try:
            self.codec.send_data(stream_id, b"", end_stream=True)
        except LocalStreamError as exc:
            raise EngineStreamClosed(str(exc)) from exc

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        if stream_id in self.codec.streams:
            self.codec.reset_stream(stream_id, error_code)

    def credit_connection(self, nbytes: int) -> None:
        pending = self._connection_credit + nbytes
        if pending >= self._connection_due:
            self.codec.credit_connection(pending)
            pending = 0
        self._connection_credit = pending

    def credit_stream(self, stream_id: int, nbytes: int) -> None:
        # Exactly ``nbytes``, now: how much and when is the stream's window policy's call
        # (``window_policy.py`` batches, grows and shrinks).  Nothing for a stream the peer
        # can no longer send on.
        self.codec.credit_stream(stream_id, nbytes)

    def ping(self, payload: bytes) -> None:
        self.codec.ping(payload)

    def close_connection(self, error_code: int) -> None:
        self.codec.close(error_code)

    # -- receiving ----------------------------------------------------------------------------

    def receive(self, data: bytes | bytearray, conn: H2Connection, now: float) -> None:
        codec = self.codec
        events = self._events
        dispatch = self._dispatch
        try:
            codec.feed(data)
            while codec.step(events):
                for event in events:
                    dispatch(event, conn, now)
                    if conn._closing:
                        return
                events.clear()
        except CodecError as exc:
            codec.close(exc.h2_error_code)
            raise PeerProtocolError(f"HTTP/2 protocol error: {exc}", exc.h2_error_code) from exc
        finally:
            events.clear()

    def _dispatch(self, event: se.Event, conn: H2Connection, now: float) -> None:
        streams = conn._streams
        if isinstance(event, se.DataReceived):
            # Off the wire into the stream's bounded buffer (or dropped): the connection
            # window is credited now, whatever the stream's consumer does (``credit.py``).
            self.credit_connection(event.flow_length)
            if (stream := streams.get(event.stream_id)) is not None:
                if not event.data and not event.end_stream:
                    conn._note_control_frame(now)  # empty DATA frames carry nothing
                stream._on_data(event.data)
        elif isinstance(event, se.StreamEnded):
            if (stream := streams.get(event.stream_id)) is not None:
                stream._on_eof()
                conn._forget_if_finished(stream)
        elif isinstance(event, se.RequestReceived):
            self._request(event, conn, now)
        elif isinstance(event, se.ResponseReceived | se.TrailersReceived):
            self._response_or_trailers(event, conn, now)
        elif isinstance(event, se.StreamReset):
            if (stream := streams.get(event.stream_id)) is not None:
                conn._stream_was_reset(stream, event.error_code, event.remote, now)
        elif isinstance(event, c.WindowUpdated):
            conn._room_lot.unpark_all()
        elif isinstance(event, se.StreamRefused):
            conn._count_refused(now)
        elif isinstance(event, c.RemoteSettingsChanged):
            conn._peer_settings_seen = True
            conn._note_control_frame(now)
            conn._room_lot.unpark_all()
            conn._slot_lot.unpark_all()
        elif isinstance(event, c.PingAckReceived):
            conn._on_ping_ack(event.opaque, now)
        elif isinstance(event, c.ConnectionTerminated):
            conn._on_goaway(event.error_code)
        elif isinstance(event, c.PingReceived | c.SettingsAcknowledged | c.FrameIgnored):
            conn._note_control_frame(now)
        # InformationalResponseReceived (1xx) needs no action.

    def _request(self, event: se.RequestReceived, conn: H2Connection, now: float) -> None:
        sid = event.stream_id
        size = self.codec.decoder.list_size
        limit = self.limits.max_header_list_size
        if size > limit:
            conn._refuse_oversized(sid, size, limit, event.end_stream, now)
            return
        headers, why = check_received(event.headers, kind="request")
        if why is not None:
            self.reset_stream(sid, H2_PROTOCOL_ERROR)
            conn._note_malformed(sid, why, now)
            return
        conn._accept_stream(sid, headers, now)

    def _response_or_trailers(
        self, event: se.ResponseReceived | se.TrailersReceived, conn: H2Connection, now: float
    ) -> None:
        sid = event.stream_id
        trailers = isinstance(event, se.TrailersReceived)
        size = self.codec.decoder.list_size
        why: str | None = None
        if size > self.limits.max_header_list_size:
            headers, why = event.headers, f"header list of {size} bytes is over the limit"
        else:
            kind = "trailers" if trailers else "response"
            headers, why = check_received(event.headers, kind=kind)
        if why is not None:
            self.reset_stream(sid, H2_PROTOCOL_ERROR)
            conn._note_malformed(sid, why, now)
            return
        if (stream := conn._streams.get(sid)) is not None:
            if trailers:
                stream._on_trailers(headers)
            else:
                stream._on_headers(headers)
