"""The caller headers an endpoint gets: written by the last gateway only, never by a caller."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from discovery.model import ServiceName
from foundation.spiffe_id import SpiffeId
from gateway.config.model import CallerHeadersConfig
from gateway.http.caller_headers import CallerHeaderRules, for_endpoint
from gateway.http.exchange import CallContext, Request
from gateway.http.message import Headers, RequestHead
from gateway.inbound.request import parse_request
from gateway.listener.h2 import request_from_h2_block

CALLER = SpiffeId.parse("spiffe://a.test/ns/default/sa/web")
FORGED = (
    (b"x-isthmus-caller-id", b"spiffe://a.test/ns/default/sa/admin"),
    (b"x-isthmus-caller-site", b"b"),
    (b"x-isthmus-deadline-ms", b"99999999"),
    (b"isthmus-caller-id", b"spiffe://a.test/ns/default/sa/admin"),
)
LOWER_FORGED = tuple((n.lower(), v) for n, v in FORGED)
H2_PSEUDO: Headers = (
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"api.default.isthmus"),
    (b":path", b"/"),
)
Entry = Callable[[Headers], Request]


def _request(*extra: tuple[bytes, bytes], h1: bool = False) -> Request:
    headers = ((b"accept", b"*/*"), *extra)
    head = RequestHead(b"GET", b"/", b"1.1", ((b"host", b"api"), *headers)) if h1 else None
    return Request(b"GET", b"http", b"api.default.isthmus", b"/", headers, h1_head=head)


def test_headers_say_who_from_where_and_how_long() -> None:
    ctx = CallContext(caller_site="a", caller_id=CALLER, deadline=12.5, from_peer="a")
    out = for_endpoint(_request(), ctx, now=10.0, enabled=True)
    assert out.headers == (
        (b"accept", b"*/*"),
        (b"x-isthmus-caller-id", str(CALLER).encode()),
        (b"x-isthmus-caller-site", b"a"),
        (b"x-isthmus-deadline-ms", b"2500"),
    )


def test_anonymous_caller_and_passed_deadline() -> None:
    ctx = CallContext(caller_site="here", caller_id=None, deadline=1.0)
    out = for_endpoint(_request(), ctx, now=2.0, enabled=True)
    assert out.headers[1:] == (
        (b"x-isthmus-caller-site", b"here"),
        (b"x-isthmus-deadline-ms", b"0"),
    )


def peer_entry(fields: Headers) -> Request:
    return parse_request(H2_PSEUDO + fields)  # a peer's tunnel


@pytest.mark.parametrize(
    "entry",
    [
        lambda fields: request_from_h2_block(H2_PSEUDO + fields),  # an HTTP/2 caller
        peer_entry,
    ],
    ids=["h2-listener", "peer"],
)
def test_forged_headers_are_removed_where_the_request_enters(entry: Entry) -> None:
    request = entry((*LOWER_FORGED, (b"accept", b"*/*")))
    # A local caller's own deadline budget stays for the router (it can only shorten the
    # deadline, gateway/http/deadline.py); a peer's entry drops it with the rest.
    kept = () if entry is peer_entry else ((b"x-isthmus-deadline-ms", b"99999999"),)
    assert request.headers == (*kept, (b"accept", b"*/*"))
    if request.h1_head is not None:
        assert request.h1_head.headers == ((b"host", b"api.default.isthmus"), (b"accept", b"*/*"))


def test_a_callers_own_deadline_never_reaches_the_endpoint() -> None:
    ctx = CallContext(caller_site="here", caller_id=None, deadline=5.0)
    request = _request((b"x-isthmus-deadline-ms", b"99999999"), h1=True)
    for enabled, added in ((True, ((b"x-isthmus-caller-site", b"here"),)), (False, ())):
        out = for_endpoint(request, ctx, now=0.0, enabled=enabled)
        own = ((b"x-isthmus-deadline-ms", b"5000"),) if enabled else ()
        assert out.headers == ((b"accept", b"*/*"), *added, *own)
        assert out.h1_head is not None
        assert out.h1_head.headers == ((b"host", b"api"), (b"accept", b"*/*"), *added, *own)


def test_the_endpoint_view_appends_the_gateways_own_values() -> None:
    ctx = CallContext(caller_site="here", caller_id=None, deadline=5.0)
    on = for_endpoint(_request(h1=True), ctx, now=0.0, enabled=True)
    expected = (
        (b"accept", b"*/*"),
        (b"x-isthmus-caller-site", b"here"),
        (b"x-isthmus-deadline-ms", b"5000"),
    )
    assert on.headers == expected
    assert on.h1_head is not None and on.h1_head.headers == ((b"host", b"api"), *expected)


def test_nothing_to_do_returns_the_same_request() -> None:
    request = _request()
    ctx = CallContext(caller_site="here", caller_id=None, deadline=5.0)
    assert for_endpoint(request, ctx, now=0.0, enabled=False) is request


def test_rules_first_match_then_the_site_default() -> None:
    rules = CallerHeaderRules(
        default=True,
        rules=(
            CallerHeadersConfig(service="legacy", namespace="payments", enabled=False),
            CallerHeadersConfig(service="*", namespace="internal", enabled=False),
            CallerHeadersConfig(service="*", namespace="*", enabled=True),
        ),
    )
    assert not rules.enabled(ServiceName("legacy", "payments"))
    assert rules.enabled(ServiceName("legacy", "default"))
    assert not rules.enabled(ServiceName("api", "internal"))
    assert rules.enabled(ServiceName("api", "payments"))
    assert not CallerHeaderRules(default=False).enabled(ServiceName("api"))


def test_the_debug_request_reaches_neither_an_endpoint_nor_past_a_peers_entry() -> None:
    """``x-isthmus-debug`` is kept at a caller's entry (the router reads it) and removed from
    what an endpoint gets, locally and at a peer's entry."""
    ctx = CallContext(caller_site="here", caller_id=None, deadline=5.0)
    debug = (b"x-isthmus-debug", b"trace")
    for enabled in (True, False):
        out = for_endpoint(_request(debug, h1=True), ctx, now=0.0, enabled=enabled)
        assert debug not in out.headers
        assert out.h1_head is not None and debug not in out.h1_head.headers
    assert debug in request_from_h2_block((*H2_PSEUDO, debug)).headers  # for the router
    assert debug not in parse_request((*H2_PSEUDO, debug)).headers
