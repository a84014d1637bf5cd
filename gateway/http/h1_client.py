"""The upstream side of HTTP/1.1: send a request to an endpoint, read its response.

Why a role of its own: towards an endpoint the gateway is the one that must be strict about
what comes back (a 101 it did not ask for, a close-delimited body, a response after which the
connection cannot be reused) and must tell the retry logic whether any of the response was
seen (``UpstreamClosed.response_started``).  The theory of operation, the buffer, the head
reader and the body pump are ``h1_connection.py``'s.
"""

from __future__ import annotations

import trio

from foundation.errors import IsthmusError
from gateway.http.errors import UpstreamClosed, UpstreamProtocolError
from gateway.http.framing import FramingKind
from gateway.http.h1_body import body_decoder, keeps_alive, response_body_framing
from gateway.http.h1_connection import H1Connection, H1Limits, hop_safe
from gateway.http.h1_encode import NO_BODY, LocalFramingError, encode_request_head
from gateway.http.message import Headers, RequestHead, ResponseHead

# We accept trailers in the response (they are carried on to HTTP/2 callers); TE is
# hop-by-hop, so it is named in Connection (RFC 9110 section 10.1.4).
_TE_TRAILERS: Headers = ((b"te", b"trailers"), (b"connection", b"te"))


def _upstream_closed() -> IsthmusError:
    return UpstreamClosed("upstream closed the connection mid-body", response_started=True)


class H1ClientConnection(H1Connection):
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
        upgrade: bytes | None = None,
    ) -> None:
        """Send the request head (with a first piece of ``body``, and the end if ``end``, in
        the same write). Hop-by-hop/framing fields in ``head`` are dropped.

        ``upgrade`` (``b"websocket"``): ask to switch protocols (``Connection: upgrade`` and
        ``Upgrade``, which are hop-by-hop and so set here, never taken from ``head``); read
        the answer with ``receive_response(upgrade=True)``.

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
                hop_safe(head.headers),
                content_length=content_length,
                has_body=has_body,
                trailing=_TE_TRAILERS
                if upgrade is None
                else ((b"connection", b"upgrade"), (b"upgrade", upgrade)),
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

    async def receive_response(self, *, upgrade: bool = False) -> ResponseHead:
        """Read the final response head (1xx are skipped); raises UpstreamError subtypes.

        ``upgrade``: the request asked to switch protocols, so a ``101`` is returned (the
        connection then belongs to the new protocol: :meth:`take_buffered` gives the bytes
        already read past the head); otherwise a 101 is a protocol error.
        """
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
                head = self._parse_response(raw, max_headers=limits.max_headers)
            except IsthmusError:
                self._reusable = False
                raise
            if head.status >= 200:
                break
            if head.status == 101:
                self._reusable = False
                if upgrade:
                    return head
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

    def take_buffered(self) -> bytes:
        """The bytes read past the last head (after a 101: the new protocol's first bytes)."""
        out = bytes(self._buf)
        self._buf.clear()
        return out
