"""Strict HTTP/1.1 message-head rules (RFC 9110, RFC 9112), pure and sans-IO.

Why a parser of our own rather than h11's: h11 is deliberately lenient (it folds obs-fold
lines, accepts bare LF line endings, lets control bytes through in values and trims
``"Chunked "`` into ``chunked``).  A gateway sits between two parsers; every leniency is a place
where we and the next hop might disagree about where a message ends, which is how request
smuggling works.  So the head is validated here, strictly, and the body is then framed from it
by ``h1_body.py`` (our own strict chunked decoder, trailers parsed by ``parse_trailer_section``
with these same rules); what we send is serialised by ``encode_head``.  The heads themselves are
``message.py``'s, the typed errors ``errors.py``'s and the framing rules ``framing.py``'s: import
them from there.

Theory of operation
-------------------
``parse_request_head`` / ``parse_response_head`` take the raw head bytes (start line through
the terminating empty line) and either return a frozen head or raise a typed error:

* any NUL, bare CR or bare LF anywhere in the head -> 400 (RFC 9112 section 2.2);
* obs-fold (a line starting with SP/HTAB) -> 400 (RFC 9112 section 5.2);
* whitespace between field name and colon -> 400 (RFC 9112 section 5.1);
* control bytes in a value -> 400 (RFC 9110 section 5.5);
* more than ``max_headers`` fields -> 431;
* framing: ambiguous or obfuscated Transfer-Encoding / Content-Length -> 400 (501 for an
  unknown transfer coding); the rules are ``framing.py``'s, applied here so that no head with
  ambiguous framing is ever returned.

``error_response`` is the one function that turns an ``IsthmusError`` into a response.
"""

from __future__ import annotations

import re

from foundation.errors import IsthmusError
from gateway.http.errors import (
    BadRequest,
    HeadersTooLarge,
    UnsupportedVersion,
    UpstreamProtocolError,
)
from gateway.http.framing import message_framing, request_framing
from gateway.http.message import (
    Headers,
    RequestHead,
    ResponseHead,
    comma_tokens,
    header_values,
)
from overlay.h2.field_rules import CONNECTION_SPECIFIC as H2_CONNECTION_SPECIFIC
from overlay.h2.field_rules import is_value as is_h2_value

__all__ = [
    "CONNECTION_SPECIFIC",
    "FIELD_VALUE_RE",
    "REASONS",
    "TOKEN_RE",
    "check_request_head",
    "check_response_head",
    "encode_head",
    "encode_response_head",
    "error_response",
    "is_field_value",
    "is_token",
    "parse_fields",
    "parse_request_head",
    "parse_response_head",
    "parse_trailer_section",
    "strip_connection_specific",
    "wants_trailers",
]

# ---------------------------------------------------------------------------------------------
# Grammar (RFC 9110 section 5.6.2 token; section 5.5 field values)
# ---------------------------------------------------------------------------------------------

TOKEN_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# field-value chars: VCHAR, obs-text, SP, HTAB; no other control bytes.
FIELD_VALUE_RE = re.compile(rb"[\t\x20-\x7e\x80-\xff]*")
_REQUEST_LINE_RE = re.compile(
    rb"(?P<method>[!#$%&'*+\-.^_`|~0-9A-Za-z]+) (?P<target>[\x21-\x7e]+) HTTP/(?P<version>\d\.\d)"
)
_STATUS_LINE_RE = re.compile(rb"HTTP/(?P<version>\d\.\d) (?P<status>\d{3})(?: (?P<reason>.*))?")
_AUTHORITY_RE = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=%\[\]:]+")


def is_token(value: bytes) -> bool:
    return TOKEN_RE.fullmatch(value) is not None


def is_field_value(value: bytes) -> bool:
    """True if ``value`` is a trimmed RFC 9110 field value without control bytes.

    That is HTTP/2's value rule (``overlay/h2_field_rules.is_value``: no CR, LF or NUL, no
    edge whitespace) plus no other control byte: what a value crossing from HTTP/2 to HTTP/1.1
    needs.
    """
    return FIELD_VALUE_RE.fullmatch(value) is not None and is_h2_value(value)


def _check_line_endings(raw: bytes, error: type[IsthmusError]) -> None:
    if b"\x00" in raw:
        raise error("NUL byte in message head")
    if raw.count(b"\r") != raw.count(b"\n") or raw.count(b"\r\n") != raw.count(b"\n"):
        raise error("bare CR or LF in message head (lines must end with CRLF)")


def _split_head(raw: bytes, error: type[IsthmusError]) -> list[bytes]:
    if not raw.endswith(b"\r\n\r\n"):
        raise error("message head does not end with an empty line")
    _check_line_endings(raw, error)
    return raw[:-4].split(b"\r\n")


def parse_fields(
    lines: list[bytes],
    *,
    max_headers: int,
    error: type[IsthmusError],
    too_many: type[IsthmusError],
) -> Headers:
    """Parse field lines strictly (shared by heads and chunked trailers)."""
    if len(lines) > max_headers:
        raise too_many(f"more than {max_headers} header fields")
    out: list[tuple[bytes, bytes]] = []
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            raise error("obsolete line folding (obs-fold) is not accepted")
        name, colon, value = line.partition(b":")
        if not colon:
            raise error(f"header line without a colon: {line[:64]!r}")
        if not is_token(name):
            raise error(f"invalid header name {name[:64]!r} (no whitespace before ':')")
        value = value.strip(b" \t")
        if FIELD_VALUE_RE.fullmatch(value) is None:
            raise error(f"control byte in the value of header {name.decode('latin-1')!r}")
        out.append((name.lower(), value))
    return tuple(out)


def parse_request_head(raw: bytes, *, max_headers: int = 100) -> RequestHead:
    """Parse and validate a raw HTTP/1.x request head (through the final empty line)."""
    lines = _split_head(raw, BadRequest)
    match = _REQUEST_LINE_RE.fullmatch(lines[0])
    if match is None:
        raise BadRequest(f"malformed request line: {lines[0][:100]!r}")
    version = match["version"]
    if version not in (b"1.0", b"1.1"):
        raise UnsupportedVersion(f"HTTP/{version.decode()} is not supported on HTTP/1")
    head = RequestHead(
        method=match["method"],
        target=match["target"],
        http_version=version,
        headers=parse_fields(
            lines[1:], max_headers=max_headers, error=BadRequest, too_many=HeadersTooLarge
        ),
    )
    check_request_head(head)
    return head


def check_request_head(head: RequestHead) -> None:
    """The rules on a parsed request head as a whole: target form, one valid Host for
    HTTP/1.1, unambiguous framing (shared with ``h1_fast.py``'s parser)."""
    _check_target_form(head)
    hosts = header_values(head.headers, b"host")
    if len(hosts) > 1 or (head.http_version == b"1.1" and not hosts):
        raise BadRequest("an HTTP/1.1 request needs exactly one Host header")
    if hosts and hosts[0] and _AUTHORITY_RE.fullmatch(hosts[0]) is None:
        raise BadRequest(f"invalid Host header {hosts[0][:100]!r}")
    request_framing(head)


def _check_target_form(head: RequestHead) -> None:
    target = head.target
    if head.method == b"CONNECT":
        if _AUTHORITY_RE.fullmatch(target) is None or b"@" in target or b":" not in target:
            raise BadRequest("CONNECT needs an authority-form target host:port")
    elif target == b"*":
        if head.method != b"OPTIONS":
            raise BadRequest("asterisk-form target is only valid for OPTIONS")
    elif not (target.startswith(b"/") or target[:7].lower() in (b"http://", b"https:/")):
        raise BadRequest(f"unsupported request target {target[:100]!r}")


def parse_response_head(raw: bytes, *, max_headers: int = 100) -> ResponseHead:
    """Parse and validate a raw HTTP/1.x response head from an upstream."""
    lines = _split_head(raw, UpstreamProtocolError)
    match = _STATUS_LINE_RE.fullmatch(lines[0])
    if match is None or match["version"] not in (b"1.0", b"1.1"):
        raise UpstreamProtocolError(f"malformed status line: {lines[0][:100]!r}")
    reason = match["reason"] or b""
    if FIELD_VALUE_RE.fullmatch(reason) is None:
        raise UpstreamProtocolError("control byte in reason phrase")
    head = ResponseHead(
        status=int(match["status"]),
        reason=reason,
        http_version=match["version"],
        headers=parse_fields(
            lines[1:],
            max_headers=max_headers,
            error=UpstreamProtocolError,
            too_many=UpstreamProtocolError,
        ),
    )
    check_response_head(head)
    return head


def check_response_head(head: ResponseHead) -> None:
    """The rules on a parsed response head as a whole: a valid status, unambiguous framing
    (shared with ``h1_fast.py``'s parser)."""
    if head.status < 100:
        raise UpstreamProtocolError(f"invalid status code {head.status}")
    message_framing(head.headers, head.http_version, UpstreamProtocolError)


# ---------------------------------------------------------------------------------------------
# Connection-specific fields (RFC 9110 section 7.6.1, RFC 9113 section 8.2.2)
# ---------------------------------------------------------------------------------------------

CONNECTION_SPECIFIC = H2_CONNECTION_SPECIFIC | {
    b"te",
    b"http2-settings",
    b"proxy-authorization",
    b"proxy-authenticate",
}
"""Fields that describe one hop and are never forwarded: the ones HTTP/2 forbids (RFC 9113
section 8.2.2, listed once in ``overlay/h2/field_rules.py``) and four more. ``te`` is re-added
as ``trailers`` where the next hop needs it; ``http2-settings`` only exists to serve an h2c
upgrade, which a gateway never honours on a caller's behalf; the proxy-auth pair belongs to
the proxy hop."""


# A caller must not make us drop these by naming them in Connection (hop-by-hop abuse).
_NEVER_HOP_BY_HOP = frozenset({b"host", b"content-length", b"authorization", b"cookie"})


def strip_connection_specific(headers: Headers) -> Headers:
    """Drop hop-by-hop fields, including every field named in ``Connection``."""
    if not any(name in CONNECTION_SPECIFIC for name, _ in headers):
        return headers  # the usual head: nothing to drop (and no Connection to read)
    named = set(comma_tokens(headers, b"connection")) - _NEVER_HOP_BY_HOP
    return tuple(
        (name, value)
        for name, value in headers
        if name not in CONNECTION_SPECIFIC and name not in named
    )


def wants_trailers(headers: Headers) -> bool:
    """True if the caller said ``TE: trailers`` (it can accept a trailer section)."""
    return b"trailers" in comma_tokens(headers, b"te")


# ---------------------------------------------------------------------------------------------
# Errors -> responses (the one mapping)
# ---------------------------------------------------------------------------------------------

REASONS = {
    400: b"Bad Request",
    403: b"Forbidden",
    404: b"Not Found",
    408: b"Request Timeout",
    413: b"Content Too Large",
    429: b"Too Many Requests",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    501: b"Not Implemented",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
    505: b"HTTP Version Not Supported",
}


def error_response(exc: BaseException) -> tuple[ResponseHead, bytes]:
    """The response for an error: status from its type, a plain-text body that says why.

    Non-Isthmus exceptions become an opaque 500 (their text may leak internals).
    """
    if isinstance(exc, IsthmusError):
        status = exc.http_status
        detail = str(exc) or type(exc).__name__
    else:
        status = 500
        detail = "internal error"
    reason = REASONS.get(status, b"Error")
    text = f"{status} {reason.decode()}: {detail}\n"
    body = text.encode("utf-8", "replace")
    head = ResponseHead(
        status=status,
        reason=reason,
        headers=(
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
            # A typed error may add fields of its own (429: Retry-After).
            *getattr(exc, "response_headers", ()),
        ),
    )
    return head, body


def encode_response_head(head: ResponseHead) -> bytes:
    """Serialise a response head for HTTP/1.1 (used where no exchange exists, e.g. errors)."""
    parts = [b"HTTP/1.1 %d %s\r\n" % (head.status, head.reason or REASONS.get(head.status, b""))]
    parts.extend(name + b": " + value + b"\r\n" for name, value in head.headers)
    parts.append(b"\r\n")
    return b"".join(parts)


# ---------------------------------------------------------------------------------------------
# Serialisation and chunked trailers (used by the HTTP/1.1 codec: h1_body.py, h1_encode.py)
# ---------------------------------------------------------------------------------------------

_TOKEN_BYTES = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
# Every byte a serialised head may hold: VCHAR, obs-text, SP, HTAB, and CR/LF as line ends.
_HEAD_BYTES = bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)) + b"\t\r\n"


def encode_head(start_line: bytes, fields: Headers | list[tuple[bytes, bytes]]) -> bytes:
    """``start_line CRLF (name: value CRLF)* CRLF`` in one join, checked before it leaves.

    Why check what we built: the fields come from parsers that validated them already, so
    this is defence in depth against a bug upstream of us turning into a header injection
    on the next hop (a CR/LF in a value, a name with a colon or space).  It costs a few C
    scans over the finished bytes, not a regex per field.  Raises ValueError.
    """
    parts = [start_line, b"\r\n"]
    names = []
    for name, value in fields:
        parts += (name, b": ", value, b"\r\n")
        names.append(name)
    parts.append(b"\r\n")
    out = b"".join(parts)
    lines = len(names) + 2
    if (
        out.count(b"\r\n") != lines
        or out.count(b"\n") != lines
        or out.count(b"\r") != lines
        or out.translate(None, _HEAD_BYTES)
    ):
        raise ValueError("CR, LF, NUL or a control byte in a head to send")
    if b"".join(names).translate(None, _TOKEN_BYTES) or not all(names):
        raise ValueError("a field name to send is not a token")
    return out


def parse_trailer_section(raw: bytes, *, max_headers: int, error: type[IsthmusError]) -> Headers:
    """Parse a chunked trailer section (field lines through the empty line) strictly, with
    the rules and limits of a head: what we forward as trailers was validated like headers."""
    if not raw.endswith(b"\r\n\r\n"):
        raise error("trailer section does not end with an empty line")
    _check_line_endings(raw, error)
    return parse_fields(
        raw[:-4].split(b"\r\n"), max_headers=max_headers, error=error, too_many=error
    )
