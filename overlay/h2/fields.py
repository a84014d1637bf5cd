"""One pass over a header block we are about to send on HTTP/2 (RFC 9113 section 8.2).

Why ours and not h2's: h2's outbound validation and normalisation chain eight generators, one
pass each over the block, and measured as 8-10 % of a gateway's CPU per proxied request.  Every
block we send is built from input that was already validated (our strict HTTP/1.1 parser, or
h2's *inbound* validation, which stays on) or from our own code, so the outbound check is a
safety net: it must stay, because a peer that receives a malformed block may treat it as a
connection error and drop every stream of the link (h2 does).  This is the same net in one
loop:

* names are non-empty lowercase tokens; pseudo-headers (``:name``) come before regular fields
  and are among those RFC 9113 defines; a trailer block has none;
* no connection-specific field (section 8.2.2): ``connection``, ``keep-alive``,
  ``proxy-connection``, ``transfer-encoding``, ``upgrade``; ``te`` only as ``trailers``;
* values carry no CR, LF or NUL and no leading or trailing space or tab (section 8.2.1).

Semantics beyond syntax (which pseudo-headers a request needs) stay with the callers that
build the blocks.

The field rules themselves (names, connection-specific fields, values) are
``overlay/h2/field_rules.py``'s: the gateway's transcoder checks every block it receives with
the same rules, so each is written once.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

from overlay.h2.field_rules import CONNECTION_SPECIFIC, is_name, is_value

__all__ = ["HeaderBlockError", "check_block"]

_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":status", b":protocol"})


class HeaderBlockError(ValueError):
    """The block must not be sent; the message says which field and why."""


@functools.lru_cache(maxsize=4096)  # names repeat endlessly (values do not); errors are not kept
def _check_name(name: bytes) -> None:
    if not is_name(name[1:] if name[:1] == b":" else name):
        raise HeaderBlockError(f"invalid field name {name!r} (lowercase token required)")


def check_block(
    headers: Sequence[tuple[bytes | str, bytes | str]], *, trailers: bool = False
) -> list[tuple[bytes, bytes]]:
    """``headers`` as bytes pairs, or ``HeaderBlockError`` if the block is not sendable."""
    out: list[tuple[bytes, bytes]] = []
    regular_seen = False
    for raw_name, raw_value in headers:
        name = raw_name if isinstance(raw_name, bytes) else raw_name.encode()
        value = raw_value if isinstance(raw_value, bytes) else raw_value.encode()
        _check_name(name)
        if name[:1] == b":":
            if trailers or regular_seen or name not in _PSEUDO:
                why = "in trailers" if trailers else "after a regular field" if regular_seen else ""
                raise HeaderBlockError(f"pseudo-header {name!r} not allowed {why}".rstrip())
        else:
            regular_seen = True
            if name in CONNECTION_SPECIFIC or (name == b"te" and value.lower() != b"trailers"):
                raise HeaderBlockError(f"connection-specific field {name!r} in HTTP/2")
        if not is_value(value):
            raise HeaderBlockError(f"invalid value for {name!r}")
        out.append((name, value))
    return out
