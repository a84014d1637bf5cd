"""strip_connection_specific: hop-by-hop fields go, the usual head is passed on uncopied."""

from __future__ import annotations

from gateway.http.headers import strip_connection_specific
from gateway.http.message import Headers


def test_a_head_without_hop_by_hop_fields_is_returned_as_is() -> None:
    """Most heads carry no Connection-specific field: no per-request copy of them."""
    head: Headers = ((b"host", b"a"), (b"user-agent", b"wrk"), (b"accept", b"*/*"))
    assert strip_connection_specific(head) is head


def test_hop_by_hop_and_connection_named_fields_are_dropped() -> None:
    head: Headers = (
        (b"host", b"a"),
        (b"connection", b"keep-alive, X-Trace , cookie"),
        (b"keep-alive", b"timeout=5"),
        (b"x-trace", b"1"),
        (b"cookie", b"c=1"),  # never hop-by-hop, even when Connection names it
        (b"te", b"trailers"),
        (b"upgrade", b"h2c"),
        (b"accept", b"*/*"),
    )
    assert strip_connection_specific(head) == (
        (b"host", b"a"),
        (b"cookie", b"c=1"),
        (b"accept", b"*/*"),
    )
