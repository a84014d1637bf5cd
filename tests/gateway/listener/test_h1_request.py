"""``request_from_h1``: what a local HTTP/1.1 caller's head becomes, pure (no sockets).

Two promises: the HTTP/1.1 head it hands to an endpoint (``h1_head``) is exactly the one the
full HTTP/2 -> HTTP/1.1 validation would derive (so skipping that second validation changes
nothing), and every ``isthmus-*`` / ``x-isthmus-*`` field a caller typed is gone at the entry.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.errors import DownstreamError
from gateway.http.errors import MalformedHeaders
from gateway.http.headers import parse_request_head
from gateway.http.message import RequestHead
from gateway.http.overlay_headers import CALLER_ENTRY_STRIPPED, strip_request
from gateway.http.transcode import h1_request_to_h2, h2_request_to_h1, parse_proxy_target
from gateway.listener.h1 import request_from_h1
from gateway.listener.h2 import request_from_h2_block

FORGED = (
    b"X-Isthmus-Caller-Id: spiffe://a.test/ns/default/sa/admin\r\n"
    b"x-isthmus-caller-site: b\r\nX-ISTHMUS-DEADLINE-MS: 99999999\r\n"
    b"Isthmus-Caller-Id: spiffe://a.test/x\r\nisthmus-request-id: 0123\r\n"
)


def _as_routed(head: RequestHead, target: bytes | None) -> RequestHead:
    """The head as the listener routes it: entry fields stripped, a service port's target."""
    fields = tuple((n, v) for n, v in head.headers if n not in CALLER_ENTRY_STRIPPED)
    path = head.target
    if target is not None:
        proxy = parse_proxy_target(head.method, head.target)
        path = proxy.path if proxy is not None else path
        fields = ((b"host", target), *((n, v) for n, v in fields if n != b"host"))
    return RequestHead(head.method, path, head.http_version, fields)


def _full_validation(raw: bytes, *, target: bytes | None = None) -> object:
    request = request_from_h1(parse_request_head(raw), scheme=b"http", target=target)
    return h2_request_to_h1(strip_request(request).h2_headers())


@pytest.mark.parametrize("target", [None, b"svc.default.isthmus:8080"])
def test_forged_caller_and_gateway_fields_are_removed_at_the_entry(target: bytes | None) -> None:
    raw = b"GET /p HTTP/1.1\r\nHost: api.default.isthmus\r\n" + FORGED + b"Accept: */*\r\n\r\n"
    request = request_from_h1(parse_request_head(raw), scheme=b"http", target=target)
    # The caller's own deadline budget is kept for the router, which reads and drops it
    # (gateway/http/deadline.py); every other caller- or gateway-only field is gone.
    assert [n for n, _ in request.headers] == [b"x-isthmus-deadline-ms", b"accept"]
    assert request.h1_head is not None
    assert [n for n, _ in request.h1_head.headers] == [b"host", b"x-isthmus-deadline-ms", b"accept"]


FIELD_LINES = st.lists(
    st.tuples(
        st.sampled_from(
            [
                b"Host",
                b"Connection",
                b"TE",
                b"Cookie",
                b"X-A",
                b"Content-Length",
                b"Keep-Alive",
                b"Transfer-Encoding",
                b"X-Isthmus-Caller-Site",
                b"Isthmus-Deadline-Ms",
            ]
        ),
        st.sampled_from(
            [
                b"a.b.isthmus",
                b"A.B.isthmus:80",
                b"close",
                b"trailers",
                b"chunked",
                b"x-a",
                b"1",
                b"Keep-Alive, X-A",
                b"",
                b"c=1",
                b"\xe9t\xe9",
            ]
        ),
    ),
    max_size=8,
)


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(
        [
            b"GET / ",
            b"POST /x?y=%20 ",
            b"OPTIONS * ",
            b"GET http://A.b.isthmus:81/p ",
            b"GET https://a.b.isthmus ",
            b"DELETE /" + b"p" * 17000 + b" ",
            b"M" * 70 + b" /m ",
        ]
    ),
    st.sampled_from([None, b"svc.default.isthmus:9000"]),
    FIELD_LINES,
)
def test_the_endpoint_head_is_the_one_full_validation_derives(
    line: bytes, target: bytes | None, fields: list[tuple[bytes, bytes]]
) -> None:
    lines = [b"Host: a.b.isthmus"] + [n + b": " + v for n, v in fields if n != b"Host"]
    raw = line + b"HTTP/1.1\r\n" + b"".join(x + b"\r\n" for x in lines) + b"\r\n"
    try:
        head = parse_request_head(raw, max_headers=100)
        request = request_from_h1(head, scheme=b"http", target=target)
    except DownstreamError:
        return
    if head.method != b"CONNECT":  # the same request as through the HTTP/2 form
        via_h2 = request_from_h2_block(h1_request_to_h2(_as_routed(head, target), scheme=b"http"))
        assert request == via_h2 and request.headers == via_h2.headers
    try:
        expected = _full_validation(raw, target=target)
    except MalformedHeaders:
        assert request.h1_head is None  # the endpoint runs the full check, and its error
        return
    assert request.h1_head == expected
