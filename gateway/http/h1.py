"""HTTP/1.1 over any trio Stream: downstream (server role) and upstream (client role).

Theory of operation
-------------------
Each connection keeps its own bounded receive buffer. A message head is read into that buffer
until ``CRLF CRLF`` (never more than ``max_head_bytes``) and validated by the strict parser in
``headers.py``; the body framing is then decided from it once (``h1_body.py``: Content-Length,
chunked, none, or, for a response, close-delimited). A body decoder consumes the body from the
same buffer, one bounded read at a time, so a body is streamed, never buffered whole; what it
leaves after the end of the body is the start of the next message, whose head is validated by
us again before anything acts on it. Consequences:

* pipelined requests are handled strictly one at a time; bytes after a rejected message are
  never parsed, because a rejection closes the connection;
* one parser, ours, decides where a message ends, and the upstream can never disagree with
  it: anything ambiguous (CL+TE, obfuscated chunked, bare CR/LF, obs-fold, NUL, ...) was
  refused in the head, chunked framing is decoded strictly, and the upstream always receives
  a message we re-serialised, never the caller's raw bytes.

What we send is framed by an encoder chosen with the head (``h1_encode.py``), which refuses to
send more or less than a declared Content-Length (``LocalFramingError``). A connection carries
another exchange only when both messages ended cleanly, the request was HTTP/1.1, neither side
said ``Connection: close`` and the response was not close-delimited.

Errors are typed (``headers.py``); ``send_error`` writes the one mapped response
(``error_response``) and marks the connection for closing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import trio

from discovery.errors import IsthmusError
from gateway.http.h1_body import (
    BodyDecoder,
    body_decoder,
    expects_continue,
    has_bad_line_byte,
    keeps_alive,
    request_body_framing,
    response_body_framing,
)
from gateway.http.h1_encode import (
    NO_BODY,
    BodyEncoder,
    LocalFramingError,
    encode_request_head,
    encode_response_head,
)
from gateway.http.headers import (
    BadFraming,
    BadRequest,
    FramingKind,
    Headers,
    HeadersTooLarge,
    HeadTimeout,
    IncompleteBody,
    RequestHead,
    ResponseHead,
    UpstreamClosed,
    UpstreamProtocolError,
    error_response,
    parse_request_head,
    parse_response_head,
    strip_connection_specific,
)
from gateway.http.headers import encode_response_head as encode_error_head

_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_TOKEN_START = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_LINGER_S = 0.5
_LINGER_BYTES = 256 * 1024
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
# We accept trailers in the response (they are carried on to HTTP/2 callers); TE is
# hop-by-hop, so it is named in Connection (RFC 9110 section 10.1.4).
_TE_TRAILERS: Headers = ((b"te", b"trailers"), (b"connection", b"te"))
_CONNECT_OK = ResponseHead(200, ())


@dataclass(frozen=True, slots=True)
class H1Limits:
    """Per-connection limits (defaults from RELIABILITY.md)."""

    max_head_bytes: int = 60 * 1024
    max_headers: int = 100
    head_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0
    read_size: int = 64 * 1024


def _hop_safe(headers: Headers) -> list[tuple[bytes, bytes]]:
    """Headers as we may put them on the wire: no hop-by-hop, no framing (we set framing)."""
    return [(n, v) for n, v in strip_connection_specific(headers) if n not in _FRAMING]


def _caller_closed() -> IsthmusError:
    return IncompleteBody("caller closed the connection before the body ended")


def _upstream_closed() -> IsthmusError:
    return UpstreamClosed("upstream closed the connection mid-body", response_started=True)


class _Buffered:
    """The bounded receive buffer, head reader and body pump shared by both roles."""

    def __init__(self, stream: trio.abc.Stream, limits: H1Limits) -> None:
        self.stream = stream
        self.limits = limits
        self._buf = bytearray()
        self._eof = False
        self._reusable = True
        #: Decoder of the body we receive in this exchange (None: no message head yet).
        self._decoder: BodyDecoder | None = None
        #: Encoder of the message we send, and whether we sent its end.
        self._encoder: BodyEncoder = NO_BODY
        self._sent_end = False
        self._expect_continue = False

    @property
    def trailers(self) -> Headers:
        """Trailer fields of the last received body (valid after it returned b"")."""
        decoder = self._decoder
        return () if decoder is None else decoder.trailers

    @property
    def buffered(self) -> int:
        """Bytes received but not yet taken (the start of the current body, if any)."""
        return len(self._buf)

    async def _fill(self) -> bool:
        if self._eof:
            return False
        data = await self.stream.receive_some(self.limits.read_size)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    async def _read_head(
        self, bad: type[IsthmusError], too_large: type[IsthmusError]
    ) -> bytes | None:
        """Raw head bytes through CRLFCRLF, or None on a clean EOF before any byte.

        Bad bytes (bare CR/LF, NUL, a non-token first byte) fail at once rather than at the
        header timeout; every byte is scanned once, so a trickling caller costs O(n).
        """
        limit = self.limits.max_head_bytes
        scanned = 0
        while True:
            if scanned == 0:
                while self._buf[:2] == b"\r\n":  # RFC 9112 2.2: ignore empty lines before a head
                    del self._buf[:2]
                if self._buf[:1] == b"\r" and len(self._buf) >= 2:
                    raise bad("bare CR before the start line")
                if self._buf and self._buf[0] not in _TOKEN_START and self._buf[:1] != b"\r":
                    raise bad("message does not start with an HTTP start line")
            end = self._buf.find(b"\r\n\r\n", max(0, scanned - 3), limit)
            region = end + 4 if end >= 0 else min(len(self._buf), limit)
            if has_bad_line_byte(self._buf, scanned, region):
                raise bad("bare CR or LF, or NUL, in the message head")
            if end >= 0:
                raw = bytes(self._buf[:region])
                del self._buf[:region]
                return raw
            if len(self._buf) >= limit:
                raise too_large(f"message head larger than {limit} bytes")
            # Resume scanning where we stopped (one byte back for a CR awaiting its LF); a
            # buffer still at its start (empty or a lone CR) is re-checked from 0.
            scanned = max(0, region - 1) if bytes(self._buf[:1]) not in (b"", b"\r") else 0
            if not await self._fill():
                if not self._buf:
                    return None
                raise bad("connection closed in the middle of a message head")

    async def _receive_body(
        self, error: type[IsthmusError], closed: Callable[[], IsthmusError]
    ) -> bytes:
        """Next piece of the body (at most ``read_size`` bytes); b"" at its end.

        ``closed()`` is raised when the peer closes before the body is complete (a factory:
        this runs for every piece of every body, the error almost never); ``error`` (raised
        by the decoder) on malformed framing.
        """
        decoder = self._decoder
        if decoder is None:
            return b""
        while not decoder.done:
            if self._buf:
                try:
                    data = decoder.decode(self._buf, self.limits.read_size)
                except IsthmusError:
                    self._reusable = False
                    raise
                if data:
                    self._expect_continue = False  # they sent the body without waiting
                    return data
                if decoder.done:
                    break
            await self._before_body_read()
            if not await self._fill():
                if decoder.finish_at_eof():
                    break
                self._reusable = False
                raise closed()
        return b""

    async def _before_body_read(self) -> None:
        """Hook: the server sends ``100 Continue`` here."""

    async def send_body(self, data: bytes) -> None:
        """Send a piece of the body (one write); raises ``LocalFramingError`` for data the
        declared framing cannot carry (beyond Content-Length, after the end, no body)."""
        if data:
            try:
                if self._sent_end:
                    raise LocalFramingError("body data after the end of the message")
                out = self._encoder.data(data)
            except LocalFramingError:
                self._reusable = False
                raise
            await self.stream.send_all(out)

    def _encode_end(self, trailers: Headers) -> bytes:
        """Wire bytes that end our message. Trailers go out only with chunked framing;
        elsewhere HTTP/1.1 has nowhere to put them and they are dropped."""
        encoder = self._encoder
        sendable = _hop_safe(trailers) if trailers and encoder.chunked else ()
        try:
            if self._sent_end:
                raise LocalFramingError("message ended twice")
            out = encoder.end(tuple(sendable))
        except (LocalFramingError, ValueError):
            self._reusable = False
            raise
        self._sent_end = True
        return out

    async def aclose(self) -> None:
        await self.stream.aclose()


class H1ServerConnection(_Buffered):
    """The downstream side: read requests from a caller, write responses to it."""

    def __init__(self, stream: trio.abc.Stream, limits: H1Limits | None = None) -> None:
        super().__init__(stream, limits or H1Limits())
        self._request: RequestHead | None = None
        self._first = True
        self._keep_alive = True
        self._response_started = False

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
            with trio.move_on_after(self.limits.idle_timeout_s):
                await self._fill()
            if not self._buf:
                self._reusable = False
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
            head = parse_request_head(raw, max_headers=limits.max_headers)
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
        try:
            out, encoder, self._keep_alive = encode_response_head(
                head,
                _hop_safe(head.headers),
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


class H1ClientConnection(_Buffered):
    """The upstream side: send a request to an endpoint, read its response.

    One exchange at a time; call ``start_next()`` before reusing a kept-alive connection.
    Timeouts are the owner's (route timeout): wrap calls in ``trio.fail_after``.
    """

    def __init__(self, stream: trio.abc.Stream, limits: H1Limits | None = None) -> None:
        super().__init__(stream, limits or H1Limits())
        #: Method of the exchange in progress (None: no exchange since ``start_next``).
        self._method: bytes | None = None
        self._keep_alive = True
        self._response_seen = False

    @property
    def reusable(self) -> bool:
        """True if the last exchange completed cleanly and the connection may be reused."""
        decoder = self._decoder
        return (
            self._reusable
            and self._method is not None
            and self._sent_end
            and decoder is not None
            and decoder.done
            and self._keep_alive
            and not self._buf
            and not self._eof
        )

    def start_next(self) -> None:
        if self._method is not None and not self.reusable:
            raise RuntimeError("connection is not reusable")
        self._method = None

    async def send_request(
        self,
        head: RequestHead,
        *,
        content_length: int | None = None,
        has_body: bool = True,
        body: bytes = b"",
        end: bool = False,
    ) -> None:
        """Send the request head (with a first piece of ``body``, and the end if ``end``, in
        the same write). Hop-by-hop/framing fields in ``head`` are dropped.

        ``content_length`` given: Content-Length framing. None and ``has_body``: chunked.
        ``has_body=False``: no body at all (call ``end_request`` or pass ``end=True``).
        """
        if self._method is not None:
            raise RuntimeError("previous exchange not finished; call start_next()")
        self._method = head.method
        self._decoder = None
        self._encoder = NO_BODY
        self._sent_end = self._response_seen = False
        self._keep_alive = True
        if head.get(b"host") is None:
            raise ValueError("an upstream request needs a Host header")
        try:
            out, encoder = encode_request_head(
                head,
                _hop_safe(head.headers),
                content_length=content_length,
                has_body=has_body,
                trailing=_TE_TRAILERS,
            )
            if body:
                out += encoder.data(body)
        except (LocalFramingError, ValueError) as exc:
            self._reusable = False
            raise ValueError(f"cannot serialise request: {exc}") from None
        self._encoder = encoder
        if end:
            try:
                out += self._encode_end(())
            except LocalFramingError as exc:
                raise ValueError(f"cannot serialise request: {exc}") from None
        await self.stream.send_all(out)

    async def end_request(self, trailers: Headers = ()) -> None:
        if self._method is None:
            raise RuntimeError("end_request() before send_request()")
        out = self._encode_end(trailers)
        if out:
            await self.stream.send_all(out)

    async def receive_response(self) -> ResponseHead:
        """Read the final response head (1xx are skipped); raises UpstreamError subtypes."""
        method = self._method
        if method is None:
            raise RuntimeError("receive_response() before send_request()")
        limits = self.limits
        while True:
            raw = await self._read_head(UpstreamProtocolError, UpstreamProtocolError)
            if raw is None:
                self._reusable = False
                raise UpstreamClosed(
                    "upstream closed the connection before responding",
                    response_started=self._response_seen,
                )
            self._response_seen = True
            try:
                head = parse_response_head(raw, max_headers=limits.max_headers)
            except IsthmusError:
                self._reusable = False
                raise
            if head.status >= 200:
                break
            if head.status == 101:
                self._reusable = False
                raise UpstreamProtocolError("101 Switching Protocols to a request without Upgrade")
        framing = response_body_framing(method, head)
        self._keep_alive = (
            keeps_alive(head.http_version, head.headers)
            and framing.kind is not FramingKind.CLOSE
            and not (method == b"CONNECT" and head.status < 300)
        )
        self._decoder = body_decoder(
            framing,
            UpstreamProtocolError,
            max_headers=limits.max_headers,
            max_trailer_bytes=limits.max_head_bytes,
        )
        return head

    async def receive_body(self) -> bytes:
        """The next piece of the response body; b"" at its end (trailers in ``.trailers``)."""
        return await self._receive_body(UpstreamProtocolError, _upstream_closed)
