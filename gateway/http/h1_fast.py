"""HTTP/1.1 message heads parsed by llhttp (httptools) when it is installed, same rules.

Why: the pure-Python parser in ``headers.py`` is the reference -- strict, and the one whose
typed errors ``rescue.py`` maps to answers -- but it splits lines and runs two regular
expressions per field in Python, several microseconds per head, twice per request (the
caller's request, the endpoint's response).  llhttp (Node.js's parser, in C, wrapped by
httptools) tokenises a head in about a microsecond.

Theory of operation
-------------------
The fast path may only ever *accept less* than the reference, never more, and whatever it
accepts must come out as exactly the head the reference would build:

1. ``h1_connection.py`` already cut the raw head out of the buffer (through CRLFCRLF, within
   ``max_head_bytes``, no bare CR/LF or NUL).  Two C scans repeat the whole-head byte rules
   here: only HTAB, SP, VCHAR, obs-text and CRLF line ends; no obs-fold.
2. llhttp tokenises it.  Anything llhttp refuses (an unknown method, a duplicate
   Content-Length, CL with TE, a bad version...) and anything unusual (not HTTP/1.0 or 1.1,
   more fields than ``max_headers``, an upgrade) goes to the reference parser, which gives
   the one typed error for it -- or accepts it (llhttp knows only the registered methods).
3. The fields are normalised as the reference does (lowercase names, values without edge
   whitespace), the target must be VCHAR only, and the rules on the head as a whole --
   target form, one valid Host, unambiguous framing; a status, a reason without control
   bytes -- are the reference's own functions (``check_request_head``/``check_response_head``).

So the pure path keeps working (``http1_parser = "python"`` in ``[limits]``, or httptools
not installed), and tests run the HTTP/1.1 suites over both parsers and check, on generated
heads, that the fast path never accepts what the reference refuses.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from types import ModuleType
from typing import Literal

from gateway.http.headers import (
    check_request_head,
    check_response_head,
    parse_request_head,
    parse_response_head,
)
from gateway.http.message import RequestHead, ResponseHead


def _httptools() -> ModuleType | None:
    try:
        return importlib.import_module("httptools")
    except ImportError:  # the pure-Python parser serves (tests force it with "python")
        return None


httptools = _httptools()

__all__ = [
    "AVAILABLE",
    "ParserChoice",
    "RequestHeadParser",
    "ResponseHeadParser",
    "head_parsers",
    "parse_request_head_fast",
    "parse_response_head_fast",
]

#: Whether httptools (llhttp) can be used here.
AVAILABLE = httptools is not None
ParserChoice = Literal["auto", "httptools", "python"]
RequestHeadParser = Callable[..., RequestHead]
ResponseHeadParser = Callable[..., ResponseHead]

# Every byte a head may hold: HTAB, SP, VCHAR, obs-text, and CR/LF as line ends.
_HEAD_BYTES = b"\t\r\n" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100))
_VCHAR = bytes(range(0x21, 0x7F))
_VERSIONS = {"1.1": b"1.1", "1.0": b"1.0"}
_OWS = b" \t"


class _Fields:
    """llhttp's callbacks: the target or reason, and the fields as they come."""

    __slots__ = ("fields", "text")

    def __init__(self) -> None:
        self.text = b""
        self.fields: list[tuple[bytes, bytes]] = []

    def on_url(self, url: bytes) -> None:
        self.text += url

    def on_status(self, reason: bytes) -> None:
        self.text += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.fields.append((name, value))


def _plain(raw: bytes) -> bool:
    """Only head bytes, and no line that starts with whitespace (obs-fold)."""
    return not raw.translate(None, _HEAD_BYTES) and b"\n " not in raw and b"\n\t" not in raw


def _normalised(fields: list[tuple[bytes, bytes]]) -> tuple[tuple[bytes, bytes], ...]:
    return tuple((name.lower(), value.strip(_OWS)) for name, value in fields)


def parse_request_head_fast(raw: bytes, *, max_headers: int = 100) -> RequestHead:
    """:func:`~gateway.http.headers.parse_request_head`, tokenised by llhttp."""
    if httptools is None or not _plain(raw):
        return parse_request_head(raw, max_headers=max_headers)
    collected = _Fields()
    parser = httptools.HttpRequestParser(collected)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:  # CONNECT, Upgrade: the head itself was read
        pass
    except httptools.HttpParserError:
        return parse_request_head(raw, max_headers=max_headers)
    version = _VERSIONS.get(parser.get_http_version())
    target = collected.text
    if (
        version is None
        or len(collected.fields) > max_headers
        or not target
        or target.translate(None, _VCHAR)
    ):
        return parse_request_head(raw, max_headers=max_headers)
    method = parser.get_method()
    if not raw.startswith(b"%s %s HTTP/%s\r\n" % (method, target, version)):
        return parse_request_head(raw, max_headers=max_headers)  # e.g. extra spaces
    head = RequestHead(method, target, version, _normalised(collected.fields))
    check_request_head(head)
    return head


def parse_response_head_fast(raw: bytes, *, max_headers: int = 100) -> ResponseHead:
    """:func:`~gateway.http.headers.parse_response_head`, tokenised by llhttp."""
    if httptools is None or not _plain(raw):
        return parse_response_head(raw, max_headers=max_headers)
    collected = _Fields()
    parser = httptools.HttpResponseParser(collected)
    try:
        parser.feed_data(raw)
    except httptools.HttpParserUpgrade:
        pass
    except httptools.HttpParserError:
        return parse_response_head(raw, max_headers=max_headers)
    version = _VERSIONS.get(parser.get_http_version())
    status = parser.get_status_code()
    if version is None or len(collected.fields) > max_headers or not 100 <= status <= 999:
        return parse_response_head(raw, max_headers=max_headers)
    reason = collected.text
    line = b"HTTP/%s %03d %s\r\n" % (version, status, reason) if reason else None
    if line is None or not raw.startswith(line):  # no reason, odd spacing: the reference
        return parse_response_head(raw, max_headers=max_headers)
    head = ResponseHead(status, _normalised(collected.fields), reason, version)
    check_response_head(head)
    return head


def head_parsers(choice: ParserChoice = "auto") -> tuple[RequestHeadParser, ResponseHeadParser]:
    """The request and response head parsers for ``choice`` (``auto``: llhttp when
    httptools is installed, else the pure-Python parser).  ``httptools`` without it
    installed is an error (``UpstreamProtocolError`` is never it: ``RuntimeError``)."""
    if choice == "python" or (choice == "auto" and not AVAILABLE):
        return parse_request_head, parse_response_head
    if not AVAILABLE:
        raise RuntimeError("http1_parser = 'httptools' but httptools is not installed")
    return parse_request_head_fast, parse_response_head_fast
