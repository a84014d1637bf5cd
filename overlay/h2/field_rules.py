"""The HTTP/2 field rules (RFC 9113 section 8.2), pure, written once for both directions.

Why a module of its own: the same rules guard what a stream sends (``overlay/h2/fields.py``,
the outbound safety net) and what the gateway receives (``gateway/http/transcode.py``, which
adds the stricter HTTP/1.1 rules before a block may become an HTTP/1.1 head).  ``gateway`` may
import ``overlay`` but not the other way round, so the rules live here, pure, so that the
gateway's sans-IO codecs do not import the engine's trio adapters with them.
"""

from __future__ import annotations

CONNECTION_SPECIFIC = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
"""Fields RFC 9113 section 8.2.2 forbids in HTTP/2 (``te`` is allowed, as ``trailers`` only)."""

_TOKEN = b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"


def is_name(name: bytes) -> bool:
    """True if ``name`` is a non-empty lowercase token: a regular field name as HTTP/2 spells
    it (section 8.2.1; a pseudo-header is ``:`` followed by such a name).

    Not memoised: an inbound caller sees names a peer chose and must not fill a cache with
    them (the outbound check memoises its own, already validated, names).
    """
    return bool(name) and not name.translate(None, _TOKEN)


def is_value(value: bytes) -> bool:
    """True if ``value`` has no CR, LF or NUL and no leading or trailing space or tab
    (section 8.2.1).  Two C scans, no Python loop: this runs for every field of every block."""
    size = len(value)
    return len(value.strip(b" \t")) == size and len(value.translate(None, b"\r\n\x00")) == size
