"""One HTTP/2 stream as a ``trio.abc.HalfCloseableStream``: the body of a tunnel.

Why: everything that carries bytes in Isthmus is a trio Stream, so an L4 tunnel (a CONNECT
stream) can be spliced to a TCP socket with the same copy loop as any other pair of streams,
and an L7 tunnel's body can be read and written like a socket.

Theory of operation
-------------------
The connection (``overlay.h2.connection.H2Connection``) owns the h2 state machine and the
transport; this object owns one stream's *buffers and waiting*.  The connection delivers what
arrives (``_on_headers``, ``_on_data``, ``_on_trailers``, ``_on_eof``, ``_on_reset``,
``_on_gone``); the consumer takes it (``receive_some``) and only then is credit handed back
to the peer (``StreamOwner.stream_credit``), which is what opens the peer's *stream*
flow-control window again (the connection window was credited on arrival, so a stalled
consumer stalls only its own stream).  How much credit, and so how large the window is, is
the stream's ``ReceiveWindow``'s decision (``window_policy.py``: it grows while the consumer
keeps the window full and drains it, within the gateway-wide budget).  The peer may therefore
never have more than one stream window of unconsumed data here: the receive buffer is bounded
by the window we advertised, and a slow reader slows its writer.  Sending goes through the
connection, which waits for the peer's window and for room in its bounded outbound buffer.

States, per direction: receiving is open until EOF (END_STREAM) or reset; sending is open until
``send_eof()``/trailers or reset.  ``aclose()`` ends both: if either direction is still open the
stream is reset (CANCEL if we had not finished sending, NO_ERROR if only the peer had not), and
unconsumed data is dropped and the window handed back to the budget (the connection window
was credited on arrival, so nothing leaks).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import trio

from foundation.errors import (
    H2_CANCEL,
    H2_NO_ERROR,
    H2_REFUSED_STREAM,
    DownstreamError,
    UpstreamError,
)
from overlay.h2.limits import H2Limits
from overlay.h2.receive_window import receive_window

#: Headers as they arrive: lowercase names and values as bytes, pseudo-headers first.
HeaderList = list[tuple[bytes, bytes]]
#: Headers as callers may pass them, to be encoded: names and values as str or bytes.
HeaderInput = Sequence[tuple[bytes | str, bytes | str]]


class TunnelError(UpstreamError):
    """Root of errors raised by HTTP/2 streams and the connection carrying them."""


class StreamReset(TunnelError):
    """The stream was reset, by the peer (``remote=True``) or by us; carries the h2 code."""

    def __init__(self, error_code: int, *, remote: bool) -> None:
        who = "peer" if remote else "local side"
        super().__init__(f"stream reset by {who} with HTTP/2 error code {error_code:#x}")
        self.h2_error_code = error_code
        self.error_code = error_code
        self.remote = remote

    @property
    def refused(self) -> bool:
        """REFUSED_STREAM means the peer did no work: the request is safe to retry."""
        return self.error_code == H2_REFUSED_STREAM


class ConnectionGone(TunnelError):
    """The HTTP/2 connection carrying the stream is closed (or closing)."""

    def __init__(self, message: str, *, error_code: int = H2_NO_ERROR) -> None:
        super().__init__(message)
        self.error_code = error_code


class LinkDown(ConnectionGone):
    """The link missed its PING deadline and was declared down."""


class PeerMisbehaved(ConnectionGone):
    """The peer broke the protocol or a flood limit; we sent GOAWAY with ``error_code``."""


class InvalidHeaders(DownstreamError):
    """Headers h2 refuses to send (missing/invalid pseudo-headers, connection headers...)."""


class StreamOwner(Protocol):
    """What a stream needs from its connection.  Implemented by H2Connection only."""

    #: ``window_settings`` and ``window_budget`` size each stream's receive window.
    limits: H2Limits

    async def stream_send_data(
        self, stream: H2Stream, data: bytes | bytearray | memoryview
    ) -> None:
        """Send ``data``, waiting for flow-control window and outbound room."""

    async def stream_send_headers(
        self, stream: H2Stream, headers: HeaderInput, end_stream: bool
    ) -> None:
        """Send a header block (response headers or trailers)."""

    async def stream_send_whole(self, stream: H2Stream, headers: HeaderInput, body: bytes) -> bool:
        """Send response headers, ``body`` and END_STREAM in one step if the window and the
        outbound buffer allow it right now; False (nothing sent) if not."""

    def stream_send_final(self, stream: H2Stream, data: bytes) -> bool:
        """Queue ``data`` and END_STREAM at once (no scheduler pass) if the window and the
        outbound buffer allow it right now; False (nothing sent) if not."""

    def stream_end(self, stream: H2Stream) -> None:
        """Send END_STREAM (empty DATA frame)."""

    def stream_reset(self, stream: H2Stream, error_code: int) -> None:
        """Send RST_STREAM."""

    def stream_credit(self, stream: H2Stream, increment: int) -> None:
        """Send the peer a WINDOW_UPDATE of exactly ``increment`` for ``stream`` (now, no
        batching of its own: the stream's window policy decided it); nothing if the stream
        is gone."""

    async def stream_wait_writable(self, stream: H2Stream) -> None:
        """Return when the stream has send window (or has failed)."""


@dataclass(frozen=True, slots=True)
class H2StreamStatistics:
    stream_id: int
    buffered: int
    max_buffered: int
    bytes_received: int
    bytes_sent: int
    local_ended: bool
    remote_ended: bool
    #: The receive window the peer was given (what it may send or have in flight, plus what
    #: is buffered and not yet credited back) and the size the window policy aims at.
    receive_window: int = 0
    receive_window_target: int = 0


def encode_headers(headers: HeaderInput) -> HeaderList:
    return [
        (n if isinstance(n, bytes) else n.encode(), v if isinstance(v, bytes) else v.encode())
        for n, v in headers
    ]


class H2Stream(trio.abc.HalfCloseableStream):
    """One HTTP/2 stream; see the module docstring."""

    def __init__(
        self,
        owner: StreamOwner,
        stream_id: int,
        *,
        client_side: bool,
        request_headers: HeaderList,
    ) -> None:
        self._owner = owner
        self.stream_id = stream_id
        self.client_side = client_side
        #: The request's header block (sent by a client, received by a server).
        self.request_headers = request_headers
        #: Trailers from the peer, set when they arrive (before EOF is returned).
        self.trailers: HeaderList | None = None
        self._response_headers: HeaderList | None = None
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._max_buffered = 0
        self._bytes_received = 0
        self._bytes_sent = 0
        self._remote_ended = False
        self._local_ended = False
        self._failure: StreamReset | ConnectionGone | None = None
        self._closed = False
        self._receiving = False
        self._sending = False
        self._lot = trio.lowlevel.ParkingLot()
        self._window = receive_window(owner.limits.window_settings, owner.limits.window_budget)
        # A client's request headers go out with the stream; a server must send its response
        # headers before any DATA (h2 would let it, and the peer would kill the connection).
        self._headers_sent = client_side

    # -- consumer API ------------------------------------------------------------------------

    async def response_headers(self) -> HeaderList:
        """Client side: wait for the peer's (final) response headers."""
        if not self.client_side:
            raise RuntimeError("a server-side stream receives request_headers, not responses")
        # One scheduler pass per call, not two: parking is the checkpoint when we wait.
        await trio.lowlevel.checkpoint_if_cancelled()
        parked = False
        while self._response_headers is None:
            self._raise_if_failed()
            if self._remote_ended:
                raise StreamReset(H2_CANCEL, remote=True)
            await self._lot.park()
            parked = True
        if not parked:
            await trio.lowlevel.cancel_shielded_checkpoint()
        return self._response_headers

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None and max_bytes < 1:
            raise ValueError("max_bytes must be >= 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this stream")
        self._receiving = True
        try:
            # Exactly one scheduler pass per call (a waiting consumer on a busy tunnel made
            # two per chunk): parking is the checkpoint when we wait; otherwise a shielded
            # one after the data was taken, so a cancellation never loses taken bytes.
            await trio.lowlevel.checkpoint_if_cancelled()
            parked = False
            while True:
                if self._closed:
                    raise trio.ClosedResourceError("stream was closed")
                if self._chunks:
                    data = self._take(max_bytes)
                    break
                self._raise_if_failed()
                if self._remote_ended:
                    data = b""
                    break
                await self._lot.park()
                parked = True
            if not parked:
                await trio.lowlevel.cancel_shielded_checkpoint()
            return data
        finally:
            self._receiving = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._sending = True
        try:
            self._check_can_send()
            await self._owner.stream_send_data(self, data)
            self._bytes_sent += len(data)
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        self._check_can_send()
        await self._owner.stream_wait_writable(self)

    async def send_eof(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("send_eof while send_all is running")
        await trio.lowlevel.checkpoint()
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        if self._local_ended:
            return
        self._raise_if_failed()
        if not self._headers_sent:
            raise RuntimeError("send the response headers (send_headers) before send_eof")
        self._local_ended = True
        self._owner.stream_end(self)

    async def send_headers(self, headers: HeaderInput, *, end_stream: bool = False) -> None:
        """Send response headers (server side) or, after the body, trailers."""
        self._check_can_send(body=False)
        await self._owner.stream_send_headers(self, headers, end_stream)
        self._headers_sent = True
        if end_stream:
            self._local_ended = True

    async def send_response(self, headers: HeaderInput, body: bytes) -> None:
        """Server side: a complete response (headers, ``body``, end) at once.

        Why: written in one step the response leaves in one write on the connection (and
        reaches the peer in one read), instead of up to three with a scheduler pass between
        them.  The result on the wire is what ``send_headers``/``send_all``/``send_eof`` give.
        """
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        self._check_can_send(body=False)
        if body:
            self._sending = True
            try:
                sent = await self._owner.stream_send_whole(self, headers, body)
            finally:
                self._sending = False
            if sent:
                self._headers_sent = True
                self._bytes_sent += len(body)
                return
        await self.send_headers(headers, end_stream=not body)
        if body:
            await self.send_all(body)
            await self.send_eof()

    def send_final_now(self, data: bytes) -> bool:
        """Client side, right after ``open_stream``: the whole request body and END_STREAM,
        queued at once (synchronous: no scheduler pass) when the send window and the
        outbound buffer have room for it now; False (nothing sent) if not, and the body is
        to be streamed with ``send_all``/``send_eof``.

        Why: a body already held whole (a route mirror's copy) then leaves with its HEADERS
        in one write on the link and reaches the peer in one read: the peer's handler starts
        with the whole request, where streaming it took a write (and a scheduler pass on each
        side) per piece and another for END_STREAM, each holding the stream open longer."""
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        if not self._headers_sent or self._local_ended:
            return False
        if not self._owner.stream_send_final(self, data):
            return False
        self._bytes_sent += len(data)
        return True

    async def send_trailers(self, headers: HeaderInput) -> None:
        """Send trailers; they end our direction of the stream."""
        await self.send_headers(headers, end_stream=True)

    def reset(self, error_code: int = H2_CANCEL) -> None:
        """Abort the stream both ways with RST_STREAM ``error_code``."""
        if self._failure is None and not (self._local_ended and self._remote_ended):
            self._owner.stream_reset(self, error_code)
            self._fail(StreamReset(error_code, remote=False))

    async def aclose(self) -> None:
        self.close_now()
        await trio.lowlevel.checkpoint()

    def close_now(self) -> None:
        """:meth:`aclose` without its checkpoint, for cleanup paths: the work is synchronous
        (an unfinished stream is reset -- ``NO_ERROR`` once our side ended, else ``CANCEL``
        -- and its buffer released), so a handler's or a forwarder's ``finally`` needs no
        shielded cancel scope and no trip through the scheduler per request."""
        if not self._closed:
            self._closed = True
            if self._failure is None and not (self._local_ended and self._remote_ended):
                code = H2_NO_ERROR if self._local_ended else H2_CANCEL
                self._owner.stream_reset(self, code)
                self._fail(StreamReset(code, remote=False))
            self._release_buffer()
            self._lot.unpark_all()

    def statistics(self) -> H2StreamStatistics:
        return H2StreamStatistics(
            stream_id=self.stream_id,
            buffered=self._buffered,
            max_buffered=self._max_buffered,
            bytes_received=self._bytes_received,
            bytes_sent=self._bytes_sent,
            local_ended=self._local_ended,
            remote_ended=self._remote_ended,
            receive_window=self._window.state.window,
            receive_window_target=self._window.state.target,
        )

    @property
    def finished(self) -> bool:
        """Both directions are over (ended or failed): the connection may forget the stream."""
        return self._failure is not None or (self._local_ended and self._remote_ended)

    @property
    def local_ended(self) -> bool:
        return self._local_ended

    @property
    def reset_by_peer(self) -> bool:
        """The peer reset this stream (RST_STREAM received): nobody wants its answer."""
        failure = self._failure
        return isinstance(failure, StreamReset) and failure.remote

    # -- connection side ---------------------------------------------------------------------

    def _on_headers(self, headers: HeaderList) -> None:
        self._response_headers = headers
        self._lot.unpark_all()

    def _on_data(self, data: bytes) -> None:
        if self._closed or self._failure is not None:
            return  # dropped: the connection window was credited, this one no longer matters
        if data:
            self._window.received(len(data))
            self._chunks.append(data)
            self._buffered += len(data)
            self._bytes_received += len(data)
            self._max_buffered = max(self._max_buffered, self._buffered)
        self._lot.unpark_all()

    def _on_trailers(self, headers: HeaderList) -> None:
        self.trailers = headers
        self._lot.unpark_all()

    def _on_eof(self) -> None:
        self._remote_ended = True
        self._window.ended()
        self._lot.unpark_all()

    def _on_local_end(self) -> None:
        self._local_ended = True

    def _on_reset(self, error_code: int, *, remote: bool) -> None:
        self._fail(StreamReset(error_code, remote=remote))

    def _on_gone(self, error: ConnectionGone) -> None:
        if self._failure is None and not (self._local_ended and self._remote_ended):
            self._fail(error)
        else:
            self._lot.unpark_all()

    # -- internals ---------------------------------------------------------------------------

    def _fail(self, error: StreamReset | ConnectionGone) -> None:
        if self._failure is None:
            self._failure = error
        if not self._complete_then_stopped(error):
            self._release_buffer()
        self._lot.unpark_all()

    def _complete_then_stopped(self, error: StreamReset | ConnectionGone) -> bool:
        """RFC 9113 section 8.1: a peer that sent its whole message (END_STREAM) and then
        RST_STREAM NO_ERROR only asks us to stop sending; "clients MUST NOT discard
        responses as a result".  What arrived stays readable (and counted against the
        windows until taken or ``aclose``); ``receive_some`` raises the reset after it."""
        return (
            isinstance(error, StreamReset)
            and error.remote
            and error.error_code == H2_NO_ERROR
            and self._remote_ended
        )

    def _release_buffer(self) -> None:
        self._buffered = 0
        self._chunks.clear()
        self._window.closed()

    def _take(self, max_bytes: int | None) -> bytes:
        limit = self._buffered if max_bytes is None else min(max_bytes, self._buffered)
        parts: list[bytes] = []
        taken = 0
        while taken < limit:
            chunk = self._chunks[0]
            want = limit - taken
            if len(chunk) <= want:
                parts.append(self._chunks.popleft())
                taken += len(chunk)
            else:
                parts.append(chunk[:want])
                self._chunks[0] = chunk[want:]
                taken += want
        self._buffered -= taken
        credit = self._window.consumed(taken)
        if credit:
            self._owner.stream_credit(self, credit)
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def _raise_if_failed(self) -> None:
        failure = self._failure
        if failure is None:
            return
        if isinstance(failure, StreamReset):
            raise StreamReset(failure.error_code, remote=failure.remote)
        raise type(failure)(str(failure), error_code=failure.error_code)

    def _check_can_send(self, *, body: bool = True) -> None:
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        self._raise_if_failed()
        if self._local_ended:
            raise trio.ClosedResourceError("this direction was already ended (send_eof)")
        if body and not self._headers_sent:
            raise RuntimeError("send the response headers (send_headers) before the body")

    def _wake(self) -> None:
        self._lot.unpark_all()
