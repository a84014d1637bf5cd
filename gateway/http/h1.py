"""HTTP/1.1 over any trio Stream: downstream (server role) and upstream (client role).

Theory of operation
-------------------
Each connection keeps its own bounded receive buffer. A message head is read into that buffer
until ``CRLF CRLF`` (never more than ``max_head_bytes``), validated by the strict parser in
``headers.py``, and only then fed to a *fresh* ``h11.Connection`` for this one exchange. h11
then frames the body (Content-Length or chunked) from bytes we feed it one bounded read at a
time, so a body is streamed, never buffered whole. When the exchange ends, whatever h11 did
not consume (``trailing_data``) goes back into our buffer, and the next head is validated by
us again before any parser acts on it. Consequences:

* pipelined requests are handled strictly one at a time; bytes after a rejected message are
  never parsed, because a rejection closes the connection;
* we, h11 and the upstream can never disagree on where a message ends: anything ambiguous
  (CL+TE, obfuscated chunked, bare CR/LF, obs-fold, NUL, ...) was refused before h11 saw it,
  and the upstream always receives a message we re-serialised, never the caller's raw bytes.

Errors are typed (``headers.py``); ``send_error`` writes the one mapped response
(``error_response``) and marks the connection for closing.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass

import h11
import trio

from discovery.errors import IsthmusError
from gateway.http.headers import (
    BadFraming,
    BadRequest,
    Headers,
    HeadersTooLarge,
    HeadTimeout,
    IncompleteBody,
    RequestHead,
    ResponseHead,
    UpstreamClosed,
    UpstreamProtocolError,
    encode_response_head,
    error_response,
    is_field_value,
    parse_request_head,
    parse_response_head,
    strip_connection_specific,
)

_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_TOKEN_START = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_BODYLESS_STATUS = frozenset({204, 304})
# A LF without CR before it, a CR followed by anything but LF, or a NUL.
_BAD_HEAD_BYTE = re.compile(rb"(?<!\r)\n|\r(?=[^\n])|\x00")
_LINGER_S = 0.5
#: The only fields h11 acts on (framing, keep-alive, Host, 100-continue, upgrades).
_H11_FIELDS = frozenset(
    {b"host", b"content-length", b"transfer-encoding", b"connection", b"expect", b"upgrade"}
)
_LINGER_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class H1Limits:
    """Per-connection limits (defaults from RELIABILITY.md)."""

    max_head_bytes: int = 60 * 1024
    max_headers: int = 100
    head_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0
    read_size: int = 64 * 1024


def _hop_safe(headers: Headers) -> Headers:
    """Headers as we may put them on the wire: no hop-by-hop, no framing (we set framing)."""
    return tuple((n, v) for n, v in strip_connection_specific(headers) if n not in _FRAMING)


def _h11_head(raw: bytes, headers: Headers) -> bytes:
    """The head as h11 needs to see it: the start line and only the fields it acts on.

    Why: the head was parsed and validated already (``headers.py``); h11 only has to frame
    the body and track keep-alive, and parsing every other field a second time costs CPU on
    every request.  Bytes are the validated originals, so h11 decides as it would have.
    """
    start = raw[: raw.index(b"\r\n") + 2]
    fields = [b"%s: %s\r\n" % (n, v) for n, v in headers if n in _H11_FIELDS]
    return b"".join((start, *fields, b"\r\n"))


def _has_bad_head_byte(buf: bytearray, start: int, stop: int) -> bool:
    """``_BAD_HEAD_BYTE.search(buf, start, stop)``, quick for the usual clean head: when every
    CR and LF of the region pair up as CRLF and there is no NUL, nothing can match (four C
    scans instead of the regex at every byte); anything else is left to the regex."""
    region = buf[start:stop]
    crlf = region.count(b"\r\n")
    if b"\x00" not in region and region.count(b"\r") == crlf == region.count(b"\n"):
        return False
    return _BAD_HEAD_BYTE.search(buf, start, stop) is not None


def _caller_closed() -> IsthmusError:
    return IncompleteBody("caller closed the connection before the body ended")


def _upstream_closed() -> IsthmusError:
    return UpstreamClosed("upstream closed the connection mid-body", response_started=True)


def _checked_trailers(headers: Headers, max_headers: int, error: type[IsthmusError]) -> Headers:
    if len(headers) > max_headers:
        raise error(f"more than {max_headers} trailer fields")
    for _name, value in headers:
        if not is_field_value(value):
            raise error("control byte in a trailer value")
    return headers


class _Buffered:
    """The bounded receive buffer and head reader shared by both roles."""

    def __init__(self, stream: trio.abc.Stream, limits: H1Limits) -> None:
        self.stream = stream
        self.limits = limits
        self._buf = bytearray()
        self._eof = False
        self._h11: h11.Connection | None = None
        self._trailers: Headers = ()
        self._reusable = True
        self._pending_eom: h11.EndOfMessage | None = None

    @property
    def trailers(self) -> Headers:
        """Trailer fields of the last received body (valid after it returned b"")."""
        return self._trailers

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
            if _has_bad_head_byte(self._buf, scanned, region):
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
        """Next piece of the body (at most about ``read_size`` bytes); b"" at its end.

        ``closed()`` is raised when the peer closes before the body is complete (a factory:
        this runs for every piece of every body, the error almost never).
        """
        if self._pending_eom is not None:
            eom, self._pending_eom = self._pending_eom, None
            self._finish_body(eom, error)
            return b""
        conn = self._h11
        if conn is None:
            return b""
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._reusable = False
                if self._eof:
                    raise closed() from None
                raise error(f"malformed message body: {exc}") from None
            if event is h11.NEED_DATA:
                if parts:
                    return b"".join(parts)
                await self._before_body_read()
                if self._buf or await self._fill():
                    conn.receive_data(bytes(self._buf))
                    self._buf.clear()
                else:
                    conn.receive_data(b"")
            elif isinstance(event, h11.Data):
                parts.append(bytes(event.data))
                size += len(event.data)
                if size >= self.limits.read_size:
                    return b"".join(parts)
            elif isinstance(event, h11.EndOfMessage):
                if parts:  # deliver the data first; the next call finishes the body
                    self._pending_eom = event
                    return b"".join(parts)
                self._finish_body(event, error)
                return b""
            elif event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                if parts:
                    return b"".join(parts)
                return b""
            else:
                self._reusable = False
                raise error(f"unexpected HTTP/1 event {type(event).__name__}")

    def _finish_body(self, event: h11.EndOfMessage, error: type[IsthmusError]) -> None:
        trailers = tuple((bytes(n), bytes(v)) for n, v in event.headers)
        self._trailers = _checked_trailers(trailers, self.limits.max_headers, error)
        assert self._h11 is not None
        data, _closed = self._h11.trailing_data
        if data:
            self._buf[:0] = data

    async def _before_body_read(self) -> None:
        """Hook: the server sends ``100 Continue`` here."""

    async def _send(self, *events: h11.Event) -> None:
        """Serialise events and write them with one ``send_all`` (one await, one syscall)."""
        assert self._h11 is not None
        out = b"".join(self._h11.send(event) or b"" for event in events)
        if out:
            await self.stream.send_all(out)

    async def aclose(self) -> None:
        await self.stream.aclose()


class H1ServerConnection(_Buffered):
    """The downstream side: read requests from a caller, write responses to it."""

    def __init__(self, stream: trio.abc.Stream, limits: H1Limits | None = None) -> None:
        super().__init__(stream, limits or H1Limits())
        self._request: RequestHead | None = None
        self._first = True
        self._response_started = False
        self._chunked_response = False

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
        if self._h11 is not None and not self._exchange_done():
            self._reusable = False
            return None
        self._h11 = None
        self._trailers = ()
        self._pending_eom = None
        self._response_started = False
        if not self._first and not self._buf:
            with trio.move_on_after(self.limits.idle_timeout_s):
                await self._fill()
            if not self._buf:
                self._reusable = False
                return None
        self._first = False
        raw: bytes | None = None
        with trio.move_on_after(self.limits.head_timeout_s) as scope:
            raw = await self._read_head(BadRequest, HeadersTooLarge)
        if scope.cancelled_caught:
            self._reusable = False
            raise HeadTimeout(f"request head not received within {self.limits.head_timeout_s} s")
        if raw is None:
            self._reusable = False
            return None
        try:
            head = parse_request_head(raw, max_headers=self.limits.max_headers)
            conn = h11.Connection(h11.SERVER, max_incomplete_event_size=self.limits.max_head_bytes)
            conn.receive_data(_h11_head(raw, head.headers))
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            self._reusable = False
            raise BadRequest(f"malformed request: {exc}") from None
        except IsthmusError:
            self._reusable = False
            raise
        if not isinstance(event, h11.Request):
            self._reusable = False
            raise BadRequest("malformed request head")
        self._h11 = conn
        self._request = head
        return head

    def _exchange_done(self) -> bool:
        conn = self._h11
        return conn is not None and conn.our_state is h11.DONE and conn.their_state is h11.DONE

    async def receive_body(self) -> bytes:
        """The next piece of the request body (<= about ``read_size``); b"" once complete.

        Raises ``IncompleteBody`` if the caller closes early, ``BadFraming`` on a bad chunk.
        Trailers are in ``.trailers`` after b"" was returned.
        """
        return await self._receive_body(BadFraming, _caller_closed)

    async def _before_body_read(self) -> None:
        conn = self._h11
        if conn is not None and conn.they_are_waiting_for_100_continue:
            await self._send(h11.InformationalResponse(status_code=100, headers=[]))

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
        if self._h11 is None or self._request is None:
            raise RuntimeError("send_response() without a request")
        headers = list(_hop_safe(head.headers))
        if content_length is not None:
            headers.append((b"content-length", b"%d" % content_length))
        bodyless = self._request.method == b"HEAD" or head.status in _BODYLESS_STATUS
        self._chunked_response = (
            content_length is None and not bodyless and self._request.http_version == b"1.1"
        )
        self._response_started = True
        events: list[h11.Event] = [
            h11.Response(status_code=head.status, headers=headers, reason=head.reason)
        ]
        if body and not bodyless:
            events.append(h11.Data(data=body))
        if end:
            events.append(h11.EndOfMessage())
        await self._send(*events)
        if end:
            self._after_response()

    async def send_body(self, data: bytes) -> None:
        if data:
            await self._send(h11.Data(data=data))

    async def end_response(self, trailers: Headers = ()) -> None:
        """Finish the response. Trailers are sent only on a chunked response to a caller that
        can take them; elsewhere HTTP/1.1 has nowhere to put them and they are dropped."""
        sendable = _hop_safe(trailers) if self._chunked_response else ()
        await self._send(h11.EndOfMessage(headers=list(sendable)))
        self._after_response()

    def _after_response(self) -> None:
        conn = self._h11
        assert conn is not None
        # A request without a body (GET, Content-Length: 0) ends without any more bytes;
        # the caller need not have called receive_body() for the connection to be reusable.
        try:
            if self._pending_eom is not None:
                eom, self._pending_eom = self._pending_eom, None
                self._finish_body(eom, BadFraming)
            elif conn.their_state is h11.SEND_BODY:
                event = conn.next_event()
                if isinstance(event, h11.EndOfMessage):
                    self._finish_body(event, BadFraming)
        except (h11.RemoteProtocolError, IsthmusError):
            self._reusable = False
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            self._reusable = False

    async def accept_connect(self) -> bytes:
        """Answer a CONNECT with 200; return bytes the caller already sent past the head.

        After this the stream carries raw tunnel bytes: forward the returned bytes first.
        """
        if self._h11 is None or self._request is None or self._request.method != b"CONNECT":
            raise RuntimeError("accept_connect() without a CONNECT request")
        while self._h11.their_state is h11.SEND_BODY:
            event = self._h11.next_event()
            if event is h11.NEED_DATA:
                break
        await self._send(h11.Response(status_code=200, headers=[]))
        self._reusable = False
        leftover, _closed = self._h11.trailing_data
        out = bytes(leftover) + bytes(self._buf)
        self._buf.clear()
        return out

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
            await self.stream.send_all(encode_response_head(head) + body)
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
        conn = self._h11
        if (
            conn is not None
            and self._response_started
            and conn.our_state in (h11.DONE, h11.MUST_CLOSE)
            and conn.their_state is h11.SEND_BODY
        ):
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
        self._chunked_request = False
        self._response_seen = False

    @property
    def reusable(self) -> bool:
        """True if the last exchange completed cleanly and the connection may be reused."""
        conn = self._h11
        return (
            self._reusable
            and conn is not None
            and conn.our_state is h11.DONE
            and conn.their_state is h11.DONE
            and not self._buf
            and not self._eof
        )

    def start_next(self) -> None:
        if self._h11 is not None and not self.reusable:
            raise RuntimeError("connection is not reusable")
        self._h11 = None

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
        if self._h11 is not None:
            raise RuntimeError("previous exchange not finished; call start_next()")
        self._h11 = h11.Connection(h11.CLIENT, max_incomplete_event_size=self.limits.max_head_bytes)
        self._trailers = ()
        self._pending_eom = None
        self._response_seen = False
        headers = list(_hop_safe(head.headers))
        self._chunked_request = False
        if content_length is not None:
            headers.append((b"content-length", b"%d" % content_length))
        elif has_body:
            headers.append((b"transfer-encoding", b"chunked"))
            self._chunked_request = True
        # We accept trailers in the response (they are carried on to HTTP/2 callers); TE is
        # hop-by-hop, so it is named in Connection (RFC 9110 section 10.1.4).
        headers += [(b"te", b"trailers"), (b"connection", b"te")]
        if head.get(b"host") is None:
            raise ValueError("an upstream request needs a Host header")
        try:
            events: list[h11.Event] = [
                h11.Request(method=head.method, target=head.target, headers=headers)
            ]
            if body:
                events.append(h11.Data(data=body))
            if end:
                events.append(h11.EndOfMessage())
            await self._send(*events)
        except h11.LocalProtocolError as exc:
            self._reusable = False
            raise ValueError(f"cannot serialise request: {exc}") from None

    async def send_body(self, data: bytes) -> None:
        if data:
            await self._send(h11.Data(data=data))

    async def end_request(self, trailers: Headers = ()) -> None:
        sendable = _hop_safe(trailers) if self._chunked_request else ()
        await self._send(h11.EndOfMessage(headers=list(sendable)))

    async def receive_response(self) -> ResponseHead:
        """Read the final response head (1xx are skipped); raises UpstreamError subtypes."""
        conn = self._h11
        if conn is None:
            raise RuntimeError("receive_response() before send_request()")
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
                head = parse_response_head(raw, max_headers=self.limits.max_headers)
                conn.receive_data(_h11_head(raw, head.headers))
                event = conn.next_event()
            except h11.RemoteProtocolError as exc:
                self._reusable = False
                raise UpstreamProtocolError(f"malformed response: {exc}") from None
            except IsthmusError:
                self._reusable = False
                raise
            if isinstance(event, h11.Response):
                return head
            if isinstance(event, h11.InformationalResponse) and event.status_code != 101:
                continue
            self._reusable = False
            raise UpstreamProtocolError(f"unexpected response event {type(event).__name__}")

    async def receive_body(self) -> bytes:
        """The next piece of the response body; b"" at its end (trailers in ``.trailers``)."""
        return await self._receive_body(
            UpstreamProtocolError,
            _upstream_closed,
        )
