"""How an HTTP/1.x message body is delimited (RFC 9112 section 6), decided from its head.

Why strict, and why here: two parsers that disagree about where a body ends are how request
smuggling works, and the head's framing fields are where they would disagree.  This module is
the one place that reads ``Transfer-Encoding`` and ``Content-Length``; the head parser
(``headers.py``) calls it so that no head with ambiguous framing is ever returned, and the body
codecs (``h1_body.py``) start from its answer.

Theory of operation
-------------------
``message_framing`` looks at the two fields once and answers a frozen ``Framing`` or raises the
error type the caller chose (400 downstream, 502 upstream):

* Transfer-Encoding must be exactly ``chunked`` (one field, one coding); any other spelling that
  mentions chunked, or several codings, is an obfuscation -> error; an unknown coding -> 501
  from a caller (``UnsupportedTransferCoding``), the chosen error from an upstream;
* Transfer-Encoding together with Content-Length -> error (we reject rather than drop CL: the
  sender is either broken or attacking); Transfer-Encoding in HTTP/1.0 -> error (section 6.1);
* Content-Length must be one field of 1-18 digits -> else error.

``request_framing`` adds the request-only rule: a CONNECT carries no body.  Which responses have
no body whatever their fields say (HEAD, 1xx, 204, 304) is ``h1_body.response_body_framing``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from foundation.errors import IsthmusError
from gateway.http.errors import BadFraming, UnsupportedTransferCoding
from gateway.http.message import Headers, RequestHead

_DIGITS_RE = re.compile(rb"[0-9]{1,18}")

MAX_CONTENT_LENGTH_DIGITS = 18  # < 2**63, so the value always fits a signed 64-bit integer.


class FramingKind(Enum):
    NONE = "none"
    LENGTH = "length"
    CHUNKED = "chunked"
    CLOSE = "close"  # a response delimited by the close of the connection (never a request)


@dataclass(frozen=True, slots=True)
class Framing:
    kind: FramingKind
    length: int = 0


#: Shared (a ``Framing`` is immutable): building one costs about as much as the checks.
_NONE = Framing(FramingKind.NONE)
_CHUNKED = Framing(FramingKind.CHUNKED)


def request_framing(head: RequestHead) -> Framing:
    """How the request body is delimited; raises BadFraming on anything ambiguous."""
    framing = message_framing(head.headers, head.http_version, BadFraming)
    if head.method == b"CONNECT" and (framing.kind is FramingKind.CHUNKED or framing.length):
        raise BadFraming("a CONNECT request must not carry a body")
    return framing


def message_framing(headers: Headers, version: bytes, error: type[IsthmusError]) -> Framing:
    """The framing the fields declare; raises ``error`` on anything ambiguous."""
    te: list[bytes] = []
    cl: list[bytes] = []
    for name, value in headers:  # one pass: this runs for every head, both ways
        if name == b"content-length":
            cl.append(value)
        elif name == b"transfer-encoding":
            te.append(value)
    if te:
        if cl:
            raise error("Transfer-Encoding together with Content-Length (possible smuggling)")
        if version == b"1.0":
            raise error("Transfer-Encoding in an HTTP/1.0 message")
        joined = b",".join(te).lower()
        if len(te) == 1 and te[0].lower() == b"chunked":
            return _CHUNKED
        if b"chunked" in joined or b"," in joined or len(te) > 1:
            raise error(f"obfuscated or stacked Transfer-Encoding {joined[:64]!r}")
        if error is BadFraming:
            raise UnsupportedTransferCoding(f"transfer coding {joined[:64]!r} not supported")
        raise error(f"transfer coding {joined[:64]!r} not supported")
    if cl:
        if len(cl) > 1:
            raise error("more than one Content-Length header")
        if _DIGITS_RE.fullmatch(cl[0]) is None:
            raise error(f"invalid Content-Length {cl[0][:32]!r}")
        return Framing(FramingKind.LENGTH, int(cl[0]))
    return _NONE
