"""HTTP/1.1 message bodies we receive, sans-IO: framing, incremental decoding, keep-alive.

Why our own instead of h11: the heads are parsed and strictly validated by ``headers.py``
already, so all that is left is to find where a body ends, to frame what we send, and to
decide whether the connection can carry another message.  h11 did that through a general
state machine built per exchange (a ``Connection``, an event object per piece, header
normalisation on every send): about a third of the gateway's CPU per small request.  These
few classes do only that, with no trio import, so they are tested without sockets.

Theory of operation
-------------------
*Framing* (RFC 9112 section 6.3) is decided once per message from its validated head:
``request_body_framing`` (chunked, Content-Length, or no body) and ``response_body_framing``
(none for HEAD, 1xx, 204, 304 and a successful CONNECT; chunked; Content-Length; otherwise
close-delimited, which leaves the connection unusable for another exchange).

A *decoder* (``body_decoder``) consumes the framing from the front of the caller's receive
buffer (a ``bytearray``) and returns body data, at most ``max_bytes`` per call; once the body
is complete ``done`` is set and ``trailers`` holds the parsed trailer fields.  Whatever it leaves
in the buffer after ``done`` is the next message (pipelining).  b"" with ``done`` unset means
"feed me more bytes"; at end of input ``finish_at_eof()`` says whether that ends the body (only a
close-delimited one).  Malformed framing raises the error type the caller chose, so the same
code answers 400 downstream and 502 upstream.  Chunked decoding is strict: 1-16 hex digits,
extensions parsed by the grammar of RFC 9112 section 7.1.1 and then ignored, the whole line
bounded (``MAX_CHUNK_LINE``), CRLF and nothing else after the size line and the data, trailers
parsed by ``parse_trailer_section`` with the head limits.

Why extensions are parsed and not merely checked against a byte class: a line such as
``5;a="`` (an unterminated quoted-string) is not a chunk-size line at all, and a parser that
follows the grammar may read on past its CRLF looking for the closing quote.  Accepting it
would make us disagree with such a parser on where the body ends, and whatever follows the
body we took as complete would travel to the upstream as a second, smuggled request.

What we *send* is framed by the encoders of ``h1_encode.py``.  ``keeps_alive`` is the
keep-alive rule: HTTP/1.1 without ``Connection: close``.
"""

from __future__ import annotations

import re

from foundation.errors import IsthmusError
from gateway.http.framing import Framing, FramingKind
from gateway.http.headers import parse_trailer_section
from gateway.http.message import Headers, RequestHead, ResponseHead, comma_tokens, header_value

#: Chunk-size digits (16 hex digits: the size always fits 64 bits; h11 allows 20).
MAX_CHUNK_SIZE_DIGITS = 16
#: Chunk-size line including extensions, without its CRLF.
MAX_CHUNK_LINE = 4096

_HEX = b"0123456789abcdefABCDEF"
# RFC 9112 section 7.1.1, with RFC 9110 section 5.6 for its parts:
#   chunk-ext     = *( BWS ";" BWS chunk-ext-name [ BWS "=" BWS chunk-ext-val ] )
#   chunk-ext-val = token / quoted-string
#   quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE
#   qdtext        = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
#   quoted-pair   = "\" ( HTAB / SP / VCHAR / obs-text )
# Every alternative starts with a different byte, so the match is linear (no backtracking
# blow-up); the line it runs on is bounded by MAX_CHUNK_LINE anyway.
_TOKEN = rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+"
_QUOTED = rb'"(?:[\t !#-\[\]-~\x80-\xff]|\\[\t \x21-\x7e\x80-\xff])*"'
_CHUNK_LINE_RE = re.compile(
    rb"([0-9A-Fa-f]{1,%d})((?:[ \t]*;[ \t]*%s(?:[ \t]*=[ \t]*(?:%s|%s))?)*)"
    % (MAX_CHUNK_SIZE_DIGITS, _TOKEN, _TOKEN, _QUOTED)
)
# A LF without CR before it, a CR followed by anything but LF, or a NUL.
_BAD_LINE_BYTE = re.compile(rb"(?<!\r)\n|\r(?=[^\n])|\x00")
_BODYLESS_STATUS = frozenset({204, 304})

NO_FRAMING = Framing(FramingKind.NONE)
CLOSE_FRAMING = Framing(FramingKind.CLOSE)
CHUNKED_FRAMING = Framing(FramingKind.CHUNKED)


def has_bad_line_byte(buf: bytes | bytearray, start: int, stop: int) -> bool:
    """True if ``buf[start:stop]`` has a bare LF, a CR not followed by LF, or a NUL.

    Quick for the usual clean input: when every CR and LF pairs up as CRLF and there is no
    NUL, nothing can match (four C scans instead of the regex at every byte).  A CR at
    ``stop - 1`` may still get its LF and is not reported.
    """
    region = buf[start:stop]
    crlf = region.count(b"\r\n")
    if b"\x00" not in region and region.count(b"\r") == crlf == region.count(b"\n"):
        return False
    return _BAD_LINE_BYTE.search(buf, start, stop) is not None


# ---------------------------------------------------------------------------------------------
# Framing and keep-alive
# ---------------------------------------------------------------------------------------------


def keeps_alive(http_version: bytes, headers: Headers) -> bool:
    """HTTP/1.1 without ``Connection: close`` (HTTP/1.0 closes after the exchange, as h11
    did: we do not implement 1.0 keep-alive)."""
    return http_version == b"1.1" and b"close" not in comma_tokens(headers, b"connection")


def expects_continue(head: RequestHead) -> bool:
    """The caller waits for ``100 Continue`` before sending the body (ignored for 1.0)."""
    return head.http_version == b"1.1" and b"100-continue" in comma_tokens(head.headers, b"expect")


def request_body_framing(head: RequestHead) -> Framing:
    """Framing of a request head validated by ``parse_request_head`` (which rejected every
    ambiguous combination): chunked, Content-Length, or no body at all."""
    if header_value(head.headers, b"transfer-encoding") is not None:
        return CHUNKED_FRAMING
    length = header_value(head.headers, b"content-length")
    if length is None or length == b"0":
        return NO_FRAMING
    return Framing(FramingKind.LENGTH, int(length))


def response_body_framing(request_method: bytes, head: ResponseHead) -> Framing:
    """Framing of a response head validated by ``parse_response_head`` (RFC 9112 6.3)."""
    status = head.status
    if (
        request_method == b"HEAD"
        or status < 200
        or status in _BODYLESS_STATUS
        or (request_method == b"CONNECT" and status < 300)
    ):
        return NO_FRAMING
    if header_value(head.headers, b"transfer-encoding") is not None:
        return CHUNKED_FRAMING
    length = header_value(head.headers, b"content-length")
    if length is None:
        return CLOSE_FRAMING
    return NO_FRAMING if length == b"0" else Framing(FramingKind.LENGTH, int(length))


# ---------------------------------------------------------------------------------------------
# Decoding
# ---------------------------------------------------------------------------------------------


def _take(buf: bytearray, n: int) -> bytes:
    """The first ``n`` bytes of ``buf``, removed from it (one copy when it is all of it)."""
    if n == len(buf):
        out = bytes(buf)
        buf.clear()
        return out
    out = bytes(buf[:n])
    del buf[:n]
    return out


class BodyDecoder:
    """Base and no-body decoder: ``done`` from the start (``NO_BODY_DECODER`` is shared)."""

    __slots__ = ("done", "trailers")

    def __init__(self) -> None:
        self.done = True
        self.trailers: Headers = ()

    def decode(self, buf: bytearray, max_bytes: int) -> bytes:
        """Body data from the front of ``buf`` (at most ``max_bytes``); see the module doc."""
        return b""

    def finish_at_eof(self) -> bool:
        """The peer closed: True if that completes the body (it then is ``done``)."""
        return self.done


NO_BODY_DECODER = BodyDecoder()


class LengthDecoder(BodyDecoder):
    """A Content-Length body: exactly ``remaining`` more bytes."""

    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.done = length == 0
        self.trailers = ()
        self.remaining = length

    def decode(self, buf: bytearray, max_bytes: int) -> bytes:
        n = min(self.remaining, max_bytes, len(buf))
        if n <= 0:
            return b""
        self.remaining -= n
        if not self.remaining:
            self.done = True
        return _take(buf, n)


class CloseDelimitedDecoder(BodyDecoder):
    """A response body that ends when the upstream closes (no framing at all)."""

    __slots__ = ()

    def __init__(self) -> None:
        self.done = False
        self.trailers = ()

    def decode(self, buf: bytearray, max_bytes: int) -> bytes:
        return _take(buf, min(len(buf), max_bytes)) if buf and max_bytes > 0 else b""

    def finish_at_eof(self) -> bool:
        self.done = True
        return True


_SIZE, _DATA, _DATA_END, _TRAILERS = range(4)


class ChunkedDecoder(BodyDecoder):
    """A chunked body (RFC 9112 section 7.1), decoded strictly and incrementally."""

    __slots__ = ("_error", "_max_headers", "_max_trailer_bytes", "_remaining", "_scanned", "_state")

    def __init__(
        self, error: type[IsthmusError], *, max_headers: int, max_trailer_bytes: int
    ) -> None:
        self.done = False
        self.trailers = ()
        self._error = error
        self._max_headers = max_headers
        self._max_trailer_bytes = max_trailer_bytes
        self._state = _SIZE
        self._remaining = 0
        self._scanned = 0

    def decode(self, buf: bytearray, max_bytes: int) -> bytes:
        parts: list[bytes] = []
        room = max_bytes
        while buf and not self.done:
            state = self._state
            if state == _DATA:
                n = min(self._remaining, room, len(buf))
                if n <= 0:
                    break
                parts.append(_take(buf, n))
                room -= n
                self._remaining -= n
                if not self._remaining:
                    self._state = _DATA_END
            elif state == _DATA_END:
                if buf[:2] != b"\r\n"[: len(buf)]:
                    raise self._error("chunk data not followed by CRLF")
                if len(buf) < 2:
                    break
                del buf[:2]
                self._state = _SIZE
            elif state == _SIZE:
                if not self._size_line(buf):
                    break
            elif not self._trailer_section(buf):
                break
        if len(parts) == 1:
            return parts[0]
        return b"".join(parts)

    def _size_line(self, buf: bytearray) -> bool:
        """Consume one chunk-size line; False if it is not complete yet."""
        end = buf.find(b"\r\n", 0, MAX_CHUNK_LINE + 2)
        if end < 0:
            if buf.find(b"\n", 0, MAX_CHUNK_LINE + 1) >= 0:
                raise self._error("chunk-size line not ended by CRLF")
            if len(buf) > MAX_CHUNK_LINE:
                raise self._error(f"chunk-size line longer than {MAX_CHUNK_LINE} bytes")
            return False
        line = bytes(buf[:end])
        del buf[: end + 2]
        if b";" in line:  # extensions (rare): the full grammar
            match = _CHUNK_LINE_RE.fullmatch(line)
            if match is None:
                raise self._error(f"malformed chunk-size line {line[:40]!r}")
            size = match[1]
        elif not line or len(line) > MAX_CHUNK_SIZE_DIGITS or line.translate(None, _HEX):
            raise self._error(f"malformed chunk-size line {line[:40]!r}")
        else:
            size = line
        self._remaining = int(size, 16)
        self._state = _DATA if self._remaining else _TRAILERS
        return True

    def _trailer_section(self, buf: bytearray) -> bool:
        """Consume the trailer section through its empty line; False if not complete yet."""
        if buf[:2] == b"\r\n":  # no trailers: the usual case
            del buf[:2]
            self.done = True
            return True
        if buf == b"\r":
            return False
        limit = self._max_trailer_bytes
        scanned = self._scanned
        end = buf.find(b"\r\n\r\n", max(0, scanned - 3), limit)
        region = end + 4 if end >= 0 else min(len(buf), limit)
        if has_bad_line_byte(buf, scanned, region):
            raise self._error("bare CR or LF, or NUL, in the trailer section")
        if end < 0:
            if len(buf) >= limit:
                raise self._error(f"trailer section larger than {limit} bytes")
            self._scanned = max(0, region - 1)
            return False
        raw = _take(buf, region)
        self.trailers = parse_trailer_section(raw, max_headers=self._max_headers, error=self._error)
        self.done = True
        return True


def body_decoder(
    framing: Framing, error: type[IsthmusError], *, max_headers: int, max_trailer_bytes: int
) -> BodyDecoder:
    """The decoder for ``framing``; ``error`` is raised for malformed framing."""
    kind = framing.kind
    if kind is FramingKind.LENGTH:
        return LengthDecoder(framing.length)
    if kind is FramingKind.CHUNKED:
        return ChunkedDecoder(error, max_headers=max_headers, max_trailer_bytes=max_trailer_bytes)
    if kind is FramingKind.CLOSE:
        return CloseDelimitedDecoder()
    return NO_BODY_DECODER
