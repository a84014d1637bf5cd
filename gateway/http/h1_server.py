"""The downstream side of HTTP/1.1: read requests from a caller, write responses to it.

Why the server role has more than the client: it owns the caller's experience of errors.  It
answers ``100 Continue`` only when the body is actually wanted, answers every error with the
one mapped response (``error_response``) and then lingers briefly, so that closing with unread
input does not make the kernel reset the connection under the answer.  The theory of
operation, the buffer, the head reader and the body pump are ``h1_connection.py``'s.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import trio

from foundation.errors import IsthmusError
from gateway.http.errors import BadFraming, BadRequest, HeadersTooLarge, HeadTimeout, IncompleteBody
from gateway.http.h1_body import body_decoder, expects_continue, keeps_alive, request_body_framing
from gateway.http.h1_connection import H1Connection, H1Limits, hop_safe
from gateway.http.h1_encode import NO_BODY, LocalFramingError, encode_response_head
from gateway.http.headers import encode_response_head as encode_error_head
from gateway.http.headers import error_response
from gateway.http.message import Headers, RequestHead, ResponseHead

_LINGER_S = 0.5
_LINGER_BYTES = 256 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CONNECT_OK = ResponseHead(200, ())


def _caller_closed() -> IsthmusError:
    return IncompleteBody("caller closed the connection before the body ended")


class H1ServerConnection(H1Connection):
    """The downstream side: read requests from a caller, write responses to it."""

    def __init__(
        self,
        stream: trio.abc.Stream,
        limits: H1Limits | None = None,
        *,
        closing: Callable[[], bool] | None = None,
    ) -> None:
        super().__init__(stream, limits or H1Limits())
        self._request: RequestHead | None = None
        self._first = True
        self._keep_alive = True
        self._response_started = False
        #: True when the server is shutting down: the next response says ``connection:
        #: close`` and the connection carries no further request (a drain).
        self._closing = closing

    @property
    def keep_alive(self) -> bool:
        """True if the connection may carry another request."""
        return self._reusable

    async def next_request(self) -> RequestHead | None:
        """Read and validate the next request head.

        Returns None when the caller closed cleanly or stayed idle past ``idle_timeout_s``
        between requests, or when the previous exchange left the connection unusable.
        Raises a ``DownstreamError`` (send it with ``send_error``) on bad or slow input.
        """
        if not self._reusable:
            return None
        if self._request is not None and not self._exchange_done():
            self._reusable = False
            return None
        self._request = None
        self._decoder = None
        self._encoder = NO_BODY
        self._sent_end = self._response_started = self._expect_continue = False
        if not self._first and not self._buf:
            await self.wait_for_request()
            if not self._buf:
                return None
        self._first = False
        raw: bytes | None = None
        limits = self.limits
        if self._buf[:1] != b"\r" and self._buf.find(b"\r\n\r\n", 0, limits.max_head_bytes) >= 0:
            # The whole head is here already (the usual case): reading it cannot block, so
            # it needs no timeout (a cancel scope is a good part of a small request's cost).
            raw = await self._read_head(BadRequest, HeadersTooLarge)
        else:
            with trio.move_on_after(limits.head_timeout_s) as scope:
                raw = await self._read_head(BadRequest, HeadersTooLarge)
            if scope.cancelled_caught:
                self._reusable = False
                raise HeadTimeout(f"request head not received within {limits.head_timeout_s} s")
        if raw is None:
            self._reusable = False
            return None
        try:
            head = self._parse_request(raw, max_headers=limits.max_headers)
        except IsthmusError:
            self._reusable = False
            raise
        decoder = body_decoder(
            request_body_framing(head),
            BadFraming,
            max_headers=limits.max_headers,
            max_trailer_bytes=limits.max_head_bytes,
        )
        self._keep_alive = keeps_alive(head.http_version, head.headers)
        self._expect_continue = not decoder.done and expects_continue(head)
        self._decoder = decoder
        self._request = head
        return head

    async def wait_for_request(self, scope: trio.CancelScope | None = None) -> None:
        """Between requests, wait up to ``idle_timeout_s`` for the next one's first bytes;
        nothing arrived (idle, the caller closed, ``scope`` cancelled): the connection is
        over.  ``scope`` lets the server cancel the wait of an idle connection (a drain) and
        only that: :meth:`next_request` reads a request that has begun without it."""
        if self._first or self._buf or not self._reusable:
            return
        if self._request is not None and not self._exchange_done():
            return  # next_request() ends the connection
        scope = trio.CancelScope() if scope is None else scope
        scope.deadline = trio.current_time() + self.limits.idle_timeout_s
        with scope:
            await self._fill()
        if not self._buf:
            self._reusable = False

    def _exchange_done(self) -> bool:
        decoder = self._decoder
        return self._sent_end and decoder is not None and decoder.done

    async def receive_body(self) -> bytes:
        """The next piece of the request body (<= ``read_size``); b"" once complete.

        Raises ``IncompleteBody`` if the caller closes early, ``BadFraming`` on a bad chunk.
        Trailers are in ``.trailers`` after b"" was returned.
        """
        return await self._receive_body(BadFraming, _caller_closed)

    async def _before_body_read(self) -> None:
        if self._expect_continue:
            self._expect_continue = False
            await self.stream.send_all(_CONTINUE)

    async def send_response(
        self,
        head: ResponseHead,
        *,
        content_length: int | None = None,
        body: bytes = b"",
        end: bool = False,
    ) -> None:
        """Send the response head (with a first piece of ``body``, and the end if ``end``,
        in the same write). Hop-by-hop and framing fields in ``head`` are dropped;
        ``content_length`` sets the framing (None: chunked to HTTP/1.1, close-delimited to
        HTTP/1.0). A HEAD, 204 or 304 response never carries a body whatever it says."""
        request = self._request
        if request is None:
            raise RuntimeError("send_response() without a request")
        if self._response_started:
            raise RuntimeError("send_response() twice for one request")
        self._response_started = True
        self._expect_continue = False
        if self._closing is not None and self._closing():
            self._keep_alive = False
        try:
            out, encoder, self._keep_alive = encode_response_head(
                head,
                hop_safe(head.headers),
                request_method=request.method,
                request_version=request.http_version,
                keep_alive=self._keep_alive,
                content_length=content_length,
            )
            if body and encoder is not NO_BODY:
                out += encoder.data(body)
        except (LocalFramingError, ValueError):
            self._reusable = False
            raise
        self._encoder = encoder
        if end:
            out += self._encode_end(())
        await self.stream.send_all(out)
        if end:
            self._after_response()

    async def end_response(self, trailers: Headers = ()) -> None:
        """Finish the response. Trailers are sent only on a chunked response to a caller that
        can take them; elsewhere HTTP/1.1 has nowhere to put them and they are dropped."""
        if not self._response_started:
            raise RuntimeError("end_response() before send_response()")
        out = self._encode_end(trailers)
        if out:
            await self.stream.send_all(out)
        self._after_response()

    def _after_response(self) -> None:
        # A request without a body (GET, Content-Length: 0) is complete already; the caller
        # need not have called receive_body() for the connection to be reusable. A chunked
        # body whose last chunk is all that is left is taken here too (no data is skipped).
        decoder = self._decoder
        assert decoder is not None
        if not decoder.done and self._buf:
            try:
                decoder.decode(self._buf, 0)
            except IsthmusError:
                self._reusable = False
        if not (decoder.done and self._keep_alive):
            self._reusable = False

    async def accept_connect(self) -> bytes:
        """Answer a CONNECT with 200; return bytes the caller already sent past the head.

        After this the stream carries raw tunnel bytes: forward the returned bytes first.
        """
        request = self._request
        if request is None or request.method != b"CONNECT" or self._response_started:
            raise RuntimeError("accept_connect() without a CONNECT request")
        out, _encoder, _keep_alive = encode_response_head(
            _CONNECT_OK,
            [],
            request_method=b"CONNECT",
            request_version=request.http_version,
            keep_alive=self._keep_alive,
            content_length=None,
        )
        self._response_started = self._sent_end = True
        await self.stream.send_all(out)
        self._reusable = False
        leftover = bytes(self._buf)
        self._buf.clear()
        return leftover

    async def accept_upgrade(self, switch: bytes) -> bytes:
        """Send ``switch`` (a serialised ``101 Switching Protocols``); return the bytes the
        caller already sent past the request head.  After this the stream carries the new
        protocol, never another HTTP/1.1 request."""
        if self._request is None or self._response_started:
            raise RuntimeError("accept_upgrade() without a request")
        self._response_started = self._sent_end = True
        self._reusable = False
        await self.stream.send_all(switch)
        leftover = bytes(self._buf)
        self._buf.clear()
        return leftover

    async def send_error(self, exc: BaseException) -> None:
        """Answer with the mapped error response (if no response started) and close.

        The caller's unread bytes are drained briefly after our answer (a lingering close):
        closing with unread input makes the kernel send RST, which can destroy the answer
        before the caller reads it.
        """
        self._reusable = False
        if self._response_started:
            await self.aclose()
            return
        self._response_started = True
        head, body = error_response(exc)
        try:
            await self.stream.send_all(encode_error_head(head) + body)
            await self._linger()
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        await self.stream.aclose()

    async def _linger(self) -> None:
        if self._eof or not isinstance(self.stream, trio.abc.HalfCloseableStream):
            return
        await self.stream.send_eof()
        drained = 0
        with trio.move_on_after(_LINGER_S):
            while drained < _LINGER_BYTES:
                data = await self.stream.receive_some(self.limits.read_size)
                if not data:
                    break
                drained += len(data)

    async def aclose(self) -> None:
        """Close; if a response went out while request bytes were left unread, half-close
        and drain briefly first (bounded by time and bytes) so the caller gets the answer."""
        decoder = self._decoder
        if self._sent_end and decoder is not None and not decoder.done:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self._linger()
        await self.stream.aclose()
