"""The stream-facing half of ``H2Connection``: opening streams and moving their bytes.

Why apart: this is the flow-control policy -- a sender waits for the peer's window *and* for
room in the bounded outbound buffer; a stream's window is credited only when its consumer took
the data, as much as its window policy says (the connection window on receipt:
``overlay.h2.credit``) -- kept
in one short file.  ``H2Connection`` (h2_connection.py) inherits it and owns the lifetime,
the tasks and the closing; the attributes below are set in its ``__init__``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import trio

from overlay.h2.engine import EngineRefused, EngineStreamClosed, ProtocolEngine
from overlay.h2.fields import HeaderBlockError, check_block
from overlay.h2.limits import H2Limits
from overlay.h2.stream import (
    ConnectionGone,
    H2Stream,
    HeaderInput,
    HeaderList,
    InvalidHeaders,
    StreamReset,
)

#: RFC 9113 section 7 STREAM_CLOSED (not among foundation.errors' codes).
H2_STREAM_CLOSED = 0x5


@contextlib.contextmanager
def _h2_stream_errors() -> Iterator[None]:
    """Keep the engine's exception types inside the connection: a closed stream is a reset
    one, any other refusal is a caller bug (e.g. response DATA before response headers)."""
    try:
        yield
    except EngineStreamClosed as exc:
        raise StreamReset(H2_STREAM_CLOSED, remote=True) from exc
    except EngineRefused as exc:
        raise RuntimeError(f"HTTP/2 does not allow this now: {exc}") from exc


def _checked(headers: HeaderInput, *, trailers: bool) -> HeaderList:
    """The block as h2 takes it, checked by us (h2's outbound validation is off: see
    ``h2_fields.py``)."""
    try:
        return check_block(headers, trailers=trailers)
    except HeaderBlockError as exc:
        raise InvalidHeaders(f"cannot send this header block: {exc}") from None


class H2StreamIO:
    """Implements ``overlay.h2.stream.StreamOwner`` and ``open_stream``."""

    client_side: bool
    limits: H2Limits
    _engine: ProtocolEngine
    _streams: dict[int, H2Stream]
    _outbuf: bytearray
    _in_flight: int
    _max_pending: int
    _write_lot: trio.lowlevel.ParkingLot
    _room_lot: trio.lowlevel.ParkingLot
    _slot_lot: trio.lowlevel.ParkingLot
    _closing: bool
    _draining: bool
    _close_reason: ConnectionGone | None
    _peer_settings_seen: bool
    _streams_opened: int
    _flow_stalls: int
    _idle_since: float

    # -- client role ------------------------------------------------------------------------

    async def open_stream(self, headers: HeaderInput, *, end_stream: bool = False) -> H2Stream:
        """Open a stream (a request or a CONNECT tunnel); waits for a concurrency slot.

        Only the client role opens streams (HTTP/2 streams are client-initiated).  Raises
        ``ConnectionGone`` if the connection is closing and ``InvalidHeaders`` if h2 refuses
        the header block (for CONNECT: ``:method CONNECT`` and ``:authority``, no
        ``:scheme``/``:path``, per RFC 9113 section 8.5).
        """
        if not self.client_side:
            raise RuntimeError("only the client role opens streams; dial a second connection")
        await trio.lowlevel.checkpoint()
        while True:
            self._raise_if_closing()
            if self._draining:
                raise ConnectionGone("connection is draining: open the stream elsewhere")
            if self._engine.open_outbound_streams < self._outbound_stream_limit():
                break
            await self._slot_lot.park()
        encoded = _checked(headers, trailers=False)
        try:
            stream_id = self._engine.open_stream(encoded, end_stream)
        except EngineRefused as exc:
            raise InvalidHeaders(f"cannot send request headers: {exc}") from exc
        stream = H2Stream(self, stream_id, client_side=True, request_headers=encoded)
        if end_stream:
            stream._on_local_end()
        self._streams[stream_id] = stream
        self._streams_opened += 1
        self._pump()
        return stream

    async def peer_accepts_extended_connect(self) -> bool:
        """Whether the peer (a server) advertised SETTINGS_ENABLE_CONNECT_PROTOCOL = 1
        (RFC 8441 section 3); waits for its first SETTINGS, which follow its preface at once
        (the caller's deadline bounds the wait).  Raises ``ConnectionGone`` if closing."""
        await trio.lowlevel.checkpoint()
        while not self._peer_settings_seen:
            self._raise_if_closing()
            await self._room_lot.park()
        return self._engine.peer_enables_connect_protocol

    @property
    def stream_room(self) -> tuple[int, int]:
        """(streams open now, how many the peer lets us have open): what a pool of links
        weighs when it picks one for a new stream."""
        return len(self._streams), self._outbound_stream_limit()

    def _outbound_stream_limit(self) -> int:
        # Until the peer's SETTINGS arrive its limit is formally unbounded; assume our own (100,
        # as most stacks do) so a burst of opens at start-up is not met with refusals.
        limit = self._engine.peer_max_concurrent_streams
        if not self._peer_settings_seen:
            limit = min(limit, self.limits.max_concurrent_streams)
        return limit

    # -- StreamOwner (called by H2Stream) ---------------------------------------------------

    async def stream_send_data(
        self, stream: H2Stream, data: bytes | bytearray | memoryview
    ) -> None:
        view = memoryview(data).cast("B")
        # One scheduler pass per call when there is room, and none extra when we wait (the
        # park is the checkpoint): a bulk sender waits for window or room on most chunks.
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while view:
            self._raise_for_send(stream)
            with _h2_stream_errors():  # once per frame: it sits on the bulk path
                window = self._engine.send_window(stream.stream_id)
                frame = min(len(view), window, self._engine.max_outbound_frame_size)
                room = frame > 0 and self._pending + frame <= self.limits.max_outbound_buffer
                if room:
                    self._engine.send_data(self._outbuf, stream.stream_id, view[:frame])
            if not room:
                if window <= 0:  # the peer's flow-control window, not our buffer, is full
                    self._flow_stalls += 1
                await self._room_lot.park()
                parked = True
                continue
            view = view[frame:]
            self._queued()
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()

    async def stream_send_headers(
        self, stream: H2Stream, headers: HeaderInput, end_stream: bool
    ) -> None:
        await trio.lowlevel.checkpoint()
        while self._pending > self.limits.max_outbound_buffer:
            self._raise_for_send(stream)
            await self._room_lot.park()
        self._raise_for_send(stream)
        # After the request (client) or the response head (server), a block is trailers.
        block = _checked(headers, trailers=stream._headers_sent)
        try:
            self._engine.send_headers(stream.stream_id, block, end_stream)
        except EngineRefused as exc:
            raise InvalidHeaders(f"cannot send headers: {exc}") from exc
        self._pump()
        if end_stream:
            stream._on_local_end()
            self._forget_if_finished(stream)

    async def stream_send_whole(self, stream: H2Stream, headers: HeaderInput, body: bytes) -> bool:
        await trio.lowlevel.checkpoint()
        self._raise_for_send(stream)
        with _h2_stream_errors():
            window = self._engine.send_window(stream.stream_id)
        if (
            len(body) > min(window, self._engine.max_outbound_frame_size)
            or self._pending + len(body) > self.limits.max_outbound_buffer
        ):
            return False
        block = _checked(headers, trailers=False)
        try:
            self._engine.send_headers(stream.stream_id, block, False)
        except EngineRefused as exc:
            raise InvalidHeaders(f"cannot send headers: {exc}") from exc
        with _h2_stream_errors():
            self._engine.send_data(self._outbuf, stream.stream_id, body, end_stream=True)
        self._queued()
        stream._on_local_end()
        self._forget_if_finished(stream)
        return True

    def stream_send_final(self, stream: H2Stream, data: bytes) -> bool:
        self._raise_for_send(stream)
        with _h2_stream_errors():
            window = self._engine.send_window(stream.stream_id)
        if (
            len(data) > min(window, self._engine.max_outbound_frame_size)
            or self._pending + len(data) > self.limits.max_outbound_buffer
        ):
            return False
        with _h2_stream_errors():
            self._engine.send_data(self._outbuf, stream.stream_id, data, end_stream=True)
        self._queued()
        stream._on_local_end()
        self._forget_if_finished(stream)
        return True

    def stream_end(self, stream: H2Stream) -> None:
        if self._closing:
            return
        with _h2_stream_errors():
            self._engine.end_stream(stream.stream_id)
        self._pump()
        self._forget_if_finished(stream)

    def stream_reset(self, stream: H2Stream, error_code: int) -> None:
        if not self._closing:
            self._engine.reset_stream(stream.stream_id, error_code)
            self._pump()
        self._forget(stream)

    def stream_credit(self, stream: H2Stream, increment: int) -> None:
        # The stream's window only: the connection window was credited when the bytes
        # arrived (``overlay.h2.credit``), so a consumer that stalls stalls only its stream.
        if increment and not self._closing:
            self._engine.credit_stream(stream.stream_id, increment)
            self._pump()

    async def stream_wait_writable(self, stream: H2Stream) -> None:
        await trio.lowlevel.checkpoint()
        while True:
            self._raise_for_send(stream)
            with _h2_stream_errors():
                window = self._engine.send_window(stream.stream_id)
            if window > 0 and self._pending < self.limits.max_outbound_buffer:
                return
            await self._room_lot.park()

    # -- shared with the driver ------------------------------------------------------------

    def _forget_if_finished(self, stream: H2Stream) -> None:
        if stream.finished:
            self._forget(stream)

    def _forget(self, stream: H2Stream) -> None:
        """The stream no longer counts: free its slot, wake whoever waits on it."""
        if self._streams.pop(stream.stream_id, None) is not None and not self._streams:
            self._idle_since = trio.current_time()
        self._slot_lot.unpark_all()
        self._room_lot.unpark_all()

    @property
    def _pending(self) -> int:
        return len(self._outbuf) + self._in_flight

    def _pump(self) -> None:
        data = self._engine.data_to_send()
        if data:
            self._outbuf += data
            self._queued()

    def _queued(self) -> None:
        """Output was appended to ``_outbuf``: note the high-water mark, wake the writer."""
        self._max_pending = max(self._max_pending, self._pending)
        self._write_lot.unpark_all()

    def _raise_if_closing(self) -> None:
        if self._closing:
            reason = self._close_reason
            if reason is None:
                raise ConnectionGone("connection is closing")
            raise type(reason)(str(reason), error_code=reason.error_code)

    def _raise_for_send(self, stream: H2Stream) -> None:
        self._raise_if_closing()
        stream._raise_if_failed()
        if stream.local_ended:
            raise trio.ClosedResourceError("this direction was already ended")
