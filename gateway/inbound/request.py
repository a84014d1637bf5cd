"""What a peer gateway sends: its header block as a validated request (pure).

Why apart from the Trio adapter (:mod:`gateway.inbound.east_west`): the strict reading of a
peer's block -- pseudo-headers, connection-specific fields, CR/LF/NUL, oversize
``:method``/``:path`` -> 400 -- decides everything that follows, and is tested without a link.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from gateway.http.caller_headers import PEER_ENTRY_STRIPPED as ENTRY_STRIPPED
from gateway.http.exchange import Request
from gateway.http.transcode import h2_request_to_h1


def parse_request(raw: Sequence[tuple[bytes, bytes]]) -> Request:
    """A validated :class:`Request` from a peer's header block (internal headers removed).

    The HTTP/1.1 head the strict validation derives comes along (``h1_head``, internal
    headers removed: each maps to itself, so dropping them after is dropping them before),
    so an HTTP/1.1 endpoint does not validate the same block again.
    """
    head = h2_request_to_h1(raw)  # strict validation; raises MalformedHeaders
    pseudo = {n: v for n, v in raw if n.startswith(b":")}
    regular = tuple((n, v) for n, v in raw if not n.startswith(b":") and n not in ENTRY_STRIPPED)
    authority = pseudo.get(b":authority")
    if authority is None:
        authority = next((v for n, v in regular if n == b"host"), b"")
    fields = tuple((n, v) for n, v in head.headers if n not in ENTRY_STRIPPED)
    return Request(
        method=pseudo[b":method"],
        scheme=pseudo.get(b":scheme", b""),
        authority=authority,
        path=pseudo.get(b":path", b""),
        headers=regular,
        h1_head=head if len(fields) == len(head.headers) else replace(head, headers=fields),
    )


def is_extended_connect(raw: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether the block carries ``:protocol`` (RFC 8441).  Pseudo-headers come first, so
    the scan stops at the first regular field: a few steps on every request."""
    for name, _ in raw:
        if name[:1] != b":":
            return False
        if name == b":protocol":
            return True
    return False
