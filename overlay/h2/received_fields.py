"""Is a received header block a well-formed HTTP/2 message (RFC 9113 section 8)?  Pure.

Why: the lean codec (``overlay/h2/codec``) decodes header blocks and leaves the HTTP field
rules to its owner; h2 applies them itself.  A link must refuse exactly what h2 refuses, so a
block that h2 would call malformed resets its stream (a stream error, section 8.1.1) whichever
engine runs the link.  These are h2's inbound rules (``h2.utilities.validate_headers``), in one
pass; ``tests/overlay/h2/test_received_fields.py`` holds h2 as the oracle on generated blocks.
As h2 does, split ``cookie`` fields are joined into one (section 8.2.3), placed last.

Not here: whether DATA adds up to ``content-length``; the gateway's transcoder checks that
before a body reaches an endpoint (``gateway/http/transcode.py``, ``ContentLengthCounter``).
"""

from __future__ import annotations

from overlay.h2.field_rules import CONNECTION_SPECIFIC
from overlay.h2.stream import HeaderList

_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":status", b":protocol"})
_REQUEST_ONLY = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
# RFC 9113 8.2.1: a name has no octet in 0x00-0x20, 0x41-0x5a (uppercase) or 0x7f-0xff.
_BAD_NAME_OCTETS = bytes([*range(0x21), *range(0x41, 0x5B), *range(0x7F, 0x100)])
_KEEP = bytes(range(256))
_BLANK = (0x20, 0x09)


_GOOD_NAMES: set[bytes] = set()
_GOOD_NAMES_MAX = 4096  # names repeat endlessly; a peer inventing new ones fills no more


def _bad_name(name: bytes) -> bool:
    if name in _GOOD_NAMES:
        return False
    if not name or len(name.translate(_KEEP, _BAD_NAME_OCTETS)) != len(name):
        return True
    if name.find(b":", 1) != -1:
        return True
    if len(_GOOD_NAMES) < _GOOD_NAMES_MAX:
        _GOOD_NAMES.add(name)
    return False


def check_received(headers: HeaderList, *, kind: str) -> tuple[HeaderList, str | None]:
    """``kind`` is ``"request"``, ``"response"`` or ``"trailers"``.  Returns the block to use
    (cookies joined) and None, or the block and why it is malformed."""
    pseudo: set[bytes] = set()
    regular = False
    method = authority = host = None
    cookies: list[bytes] = []
    # Values: CR, LF and NUL in one scan of them all; a value's ends one by one.
    values = b"".join([v for _, v in headers])
    if len(values.translate(_KEEP, b"\r\n\x00")) != len(values):
        return headers, "CR, LF or NUL in a value"
    for name, value in headers:
        if _bad_name(name):
            return headers, f"invalid field name {name[:64]!r}"
        if value and (value[0] in _BLANK or value[-1] in _BLANK):
            return headers, f"value of {name[:64]!r} starts or ends with a space or tab"
        if name[0] == 0x3A:  # ':'
            if name in pseudo:
                return headers, f"duplicate pseudo-header {name!r}"
            if regular:
                return headers, f"pseudo-header {name!r} after a regular field"
            if name not in _PSEUDO:
                return headers, f"unknown pseudo-header {name[:64]!r}"
            pseudo.add(name)
            if name == b":method":
                method = value
            elif name == b":authority":
                authority = value
            elif name == b":path" and not value and kind == "request":
                return headers, "empty :path"
            continue
        regular = True
        if name in CONNECTION_SPECIFIC:
            return headers, f"connection-specific field {name!r}"
        if name == b"te" and value.lower() != b"trailers":
            return headers, "te other than trailers"
        if name == b"host":
            if host is not None and kind == "request":
                return headers, "more than one host field"
            host = value
        elif name == b"cookie":
            cookies.append(value)
    why = _pseudo_problem(pseudo, method, kind)
    if why is None and kind == "request":
        if authority is None and host is None:
            why = "neither :authority nor host"
        elif authority is not None and host is not None and authority != host:
            why = ":authority and host differ"
    if why is None and cookies:
        headers = [f for f in headers if f[0] != b"cookie"]
        headers.append((b"cookie", b"; ".join(cookies)))
    return headers, why


def _pseudo_problem(pseudo: set[bytes], method: bytes | None, kind: str) -> str | None:
    if kind == "trailers":
        return "pseudo-header in trailers" if pseudo else None
    if kind == "response":
        if b":status" not in pseudo:
            return "response without :status"
        return "request pseudo-header in a response" if pseudo & _REQUEST_ONLY else None
    if method is None:
        return "request without :method"
    if b":status" in pseudo:
        return ":status in a request"
    connect = method == b"CONNECT"
    if connect and b":protocol" not in pseudo:
        if b":scheme" in pseudo or b":path" in pseudo:
            return "CONNECT with :scheme or :path"
        return None
    if b":scheme" not in pseudo or b":path" not in pseudo:
        return "request without :scheme or :path"
    if not connect and b":protocol" in pseudo:
        return ":protocol outside CONNECT"
    return None
