"""The part of an HTTP/1.1 connection both roles share: bounded buffer, head reader, body pump.

Why one base for the server (``h1_server.py``) and the client (``h1_client.py``) side: reading
a head and pumping a body out of one bounded receive buffer is the same job whoever speaks
first, and the rules that keep a gateway from being smuggled past (one scan per byte, bad bytes
refused at once, never more than ``max_head_bytes`` held, the bytes after a body left for the
next head) must hold identically in both directions.  The server role is ``h1_server.py``, the
client role ``h1_client.py``.

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

Errors are typed (``errors.py``); ``send_error`` writes the one mapped response
(``error_response``) and marks the connection for closing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from foundation.errors import IsthmusError
from gateway.http.h1_body import BodyDecoder, has_bad_line_byte
from gateway.http.h1_encode import NO_BODY, BodyEncoder, LocalFramingError
from gateway.http.h1_fast import ParserChoice, head_parsers
from gateway.http.headers import strip_connection_specific
from gateway.http.message import Headers

_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_TOKEN_START = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)


@dataclass(frozen=True, slots=True)
class H1Limits:
    """Per-connection limits (defaults: docs/limits.md)."""

    max_head_bytes: int = 60 * 1024
    max_headers: int = 100
    head_timeout_s: float = 10.0
    idle_timeout_s: float = 300.0
    read_size: int = 64 * 1024
    #: Who tokenises heads: llhttp (``h1_fast.py``) when installed, or the pure-Python
    #: parser; the same rules and typed errors either way.
    parser: ParserChoice = "auto"


def hop_safe(headers: Headers) -> list[tuple[bytes, bytes]]:
    """Headers as we may put them on the wire: no hop-by-hop, no framing (we set framing)."""
    return [(n, v) for n, v in strip_connection_specific(headers) if n not in _FRAMING]


class H1Connection:
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
        self._parse_request, self._parse_response = head_parsers(limits.parser)

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
        sendable = hop_safe(trailers) if trailers and encoder.chunked else ()
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
