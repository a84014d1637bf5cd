"""HTTP/1.1 <-> HTTP/2 header conversion: table-driven cases and property tests."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.errors import DownstreamError, IsthmusError, UpstreamError
from gateway.http.errors import ContentLengthMismatch, MalformedHeaders, UpstreamProtocolError
from gateway.http.headers import CONNECTION_SPECIFIC, parse_request_head
from gateway.http.message import RequestHead, ResponseHead
from gateway.http.transcode import (
    ContentLengthCounter,
    ProxyTarget,
    h1_request_to_h2,
    h1_response_to_h2,
    h1_trailers_to_h2,
    h2_request_to_h1,
    h2_response_to_h1,
    h2_trailers_to_h1,
    parse_proxy_target,
)


def encode_request(head: RequestHead) -> bytes:
    lines = [b"%s %s HTTP/%s" % (head.method, head.target, head.http_version)]
    lines += [n + b": " + v for n, v in head.headers]
    return b"\r\n".join(lines) + b"\r\n\r\n"


def h1(raw: bytes) -> RequestHead:
    return parse_request_head(raw)


BASE_H2 = [
    (b":method", b"GET"),
    (b":scheme", b"http"),
    (b":authority", b"api.default.isthmus"),
    (b":path", b"/p?q=1"),
]

# ---------------------------------------------------------------------------------------------
# HTTP/1.1 -> HTTP/2
# ---------------------------------------------------------------------------------------------


def test_h1_to_h2_builds_pseudo_headers_and_drops_hop_by_hop() -> None:
    head = h1(
        b"POST /p?q=1 HTTP/1.1\r\nHost: API.default.isthmus\r\nConnection: keep-alive, X-Hop\r\n"
        b"Keep-Alive: 5\r\nX-Hop: 1\r\nProxy-Connection: x\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMA\r\nTE: trailers, gzip\r\nTransfer-Encoding: chunked\r\n"
        b"Content-Type: text/plain\r\nCookie: a=1\r\n\r\n"
    )
    out = h1_request_to_h2(head)
    assert out[:4] == (
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"api.default.isthmus"),
        (b":path", b"/p?q=1"),
    )
    names = [n for n, _ in out[4:]]
    assert names == [b"content-type", b"cookie", b"te"]
    assert (b"te", b"trailers") in out


def test_h1_to_h2_absolute_form_wins_over_host() -> None:
    head = h1(b"GET http://api.default.isthmus:8080/x?y HTTP/1.1\r\nHost: other\r\n\r\n")
    out = dict(h1_request_to_h2(head))
    assert out[b":authority"] == b"api.default.isthmus:8080"
    assert out[b":path"] == b"/x?y"
    assert b"host" not in out


def test_h1_to_h2_connect() -> None:
    head = h1(b"CONNECT db.default.isthmus:5432 HTTP/1.1\r\nHost: db.default.isthmus:5432\r\n\r\n")
    assert h1_request_to_h2(head) == (
        (b":method", b"CONNECT"),
        (b":authority", b"db.default.isthmus:5432"),
    )


def test_h1_to_h2_drops_te_without_trailers() -> None:
    head = h1(b"GET / HTTP/1.1\r\nHost: a\r\nTE: gzip\r\n\r\n")
    assert all(n != b"te" for n, _ in h1_request_to_h2(head))


def test_h1_response_to_h2() -> None:
    head = ResponseHead(
        200,
        ((b"connection", b"x-a"), (b"x-a", b"1"), (b"content-length", b"3"), (b"x-b", b"2")),
    )
    assert h1_response_to_h2(head) == (
        (b":status", b"200"),
        (b"content-length", b"3"),
        (b"x-b", b"2"),
    )


def test_trailers_drop_prohibited_fields() -> None:
    trailers = ((b"x-checksum", b"1"), (b"content-length", b"5"), (b"host", b"evil"))
    assert h1_trailers_to_h2(trailers) == ((b"x-checksum", b"1"),)
    assert h2_trailers_to_h1(trailers, from_upstream=True) == ((b"x-checksum", b"1"),)
    with pytest.raises(UpstreamProtocolError):
        h2_trailers_to_h1([(b":status", b"200")], from_upstream=True)
    with pytest.raises(MalformedHeaders):
        h2_trailers_to_h1([(b"x", b"a\r\nb")], from_upstream=False)


# ---------------------------------------------------------------------------------------------
# HTTP/2 -> HTTP/1.1
# ---------------------------------------------------------------------------------------------


def test_h2_to_h1_basic_and_cookie_join() -> None:
    head = h2_request_to_h1([*BASE_H2, (b"cookie", b"a=1"), (b"x-y", b"z"), (b"cookie", b"b=2")])
    assert head.method == b"GET" and head.target == b"/p?q=1" and head.http_version == b"1.1"
    assert head.headers == (
        (b"host", b"api.default.isthmus"),
        (b"x-y", b"z"),
        (b"cookie", b"a=1; b=2"),
    )
    assert parse_request_head(encode_request(head)) == head


def test_h2_connect_to_h1() -> None:
    head = h2_request_to_h1([(b":method", b"CONNECT"), (b":authority", b"db.x.isthmus:5432")])
    assert head.target == b"db.x.isthmus:5432"
    assert parse_request_head(encode_request(head)) == head


def _replace(name: bytes, value: bytes | None) -> list[tuple[bytes, bytes]]:
    out = [(n, v) for n, v in BASE_H2 if n != name]
    if value is not None:
        out.append((name, value)) if not name.startswith(b":") else out.insert(0, (name, value))
    return out


MALFORMED_H2: list[tuple[str, list[tuple[bytes, bytes]]]] = [
    ("no-method", _replace(b":method", None)),
    ("no-path", _replace(b":path", None)),
    ("no-scheme", _replace(b":scheme", None)),
    ("empty-path", _replace(b":path", b"")),
    ("relative-path", _replace(b":path", b"p")),
    ("path-with-space", _replace(b":path", b"/a b")),
    ("path-with-crlf", _replace(b":path", b"/a\r\nX: y")),
    ("path-obs-text", _replace(b":path", b"/\xff")),
    ("oversize-path", _replace(b":path", b"/" + b"a" * 20000)),
    ("oversize-method", _replace(b":method", b"G" * 100)),
    ("method-space", _replace(b":method", b"GET /x")),
    ("bad-scheme", _replace(b":scheme", b"ftp")),
    ("unknown-pseudo", [*BASE_H2[:1], (b":foo", b"x"), *BASE_H2[1:]]),
    ("protocol-pseudo", [*BASE_H2, (b":protocol", b"websocket")]),
    ("status-in-request", [(b":status", b"200"), *BASE_H2]),
    ("duplicate-pseudo", [*BASE_H2, (b":path", b"/other")]),
    ("pseudo-after-regular", [*BASE_H2[:2], (b"x", b"1"), *BASE_H2[2:]]),
    ("uppercase-name", [*BASE_H2, (b"X-Upper", b"1")]),
    ("space-in-name", [*BASE_H2, (b"x y", b"1")]),
    ("empty-name", [*BASE_H2, (b"", b"1")]),
    ("colon-name", [*BASE_H2, (b"x:y", b"1")]),
    ("cr-in-value", [*BASE_H2, (b"x", b"a\rb")]),
    ("lf-in-value", [*BASE_H2, (b"x", b"a\nb")]),
    ("crlf-injection", [*BASE_H2, (b"x", b"a\r\nTransfer-Encoding: chunked")]),
    ("nul-in-value", [*BASE_H2, (b"x", b"a\x00b")]),
    ("leading-space-value", [*BASE_H2, (b"x", b" a")]),
    ("trailing-tab-value", [*BASE_H2, (b"x", b"a\t")]),
    ("connection", [*BASE_H2, (b"connection", b"close")]),
    ("keep-alive", [*BASE_H2, (b"keep-alive", b"5")]),
    ("proxy-connection", [*BASE_H2, (b"proxy-connection", b"x")]),
    ("transfer-encoding", [*BASE_H2, (b"transfer-encoding", b"chunked")]),
    ("upgrade", [*BASE_H2, (b"upgrade", b"h2c")]),
    ("http2-settings", [*BASE_H2, (b"http2-settings", b"AAMA")]),
    ("te-gzip", [*BASE_H2, (b"te", b"gzip")]),
    ("te-trailers-gzip", [*BASE_H2, (b"te", b"trailers, gzip")]),
    ("cl-conflict", [*BASE_H2, (b"content-length", b"1"), (b"content-length", b"2")]),
    ("cl-not-digits", [*BASE_H2, (b"content-length", b"1x")]),
    ("cl-negative", [*BASE_H2, (b"content-length", b"-1")]),
    ("host-differs", [*BASE_H2, (b"host", b"evil.example")]),
    ("two-hosts", [*_replace(b":authority", None), (b"host", b"a"), (b"host", b"b")]),
    ("no-authority", _replace(b":authority", None)),
    ("userinfo-authority", _replace(b":authority", b"user@api.default.isthmus")),
    ("authority-space", _replace(b":authority", b"a b")),
    ("authority-bad-port", _replace(b":authority", b"a:99999")),
    ("connect-with-path", [(b":method", b"CONNECT"), (b":authority", b"a:1"), (b":path", b"/")]),
    ("connect-no-port", [(b":method", b"CONNECT"), (b":authority", b"a")]),
    ("connect-no-authority", [(b":method", b"CONNECT")]),
    ("asterisk-get", _replace(b":path", b"*")),
]


@pytest.mark.parametrize(("name", "headers"), MALFORMED_H2, ids=[m[0] for m in MALFORMED_H2])
def test_malformed_h2_request_is_refused(name: str, headers: list[tuple[bytes, bytes]]) -> None:
    with pytest.raises(MalformedHeaders) as info:
        h2_request_to_h1(headers)
    assert isinstance(info.value, DownstreamError)
    assert info.value.h2_error_code == 0x1  # PROTOCOL_ERROR


def test_h2_request_te_trailers_and_repeated_identical_cl_ok() -> None:
    head = h2_request_to_h1(
        [*BASE_H2, (b"te", b"trailers"), (b"content-length", b"5"), (b"content-length", b"5")]
    )
    assert head.headers == ((b"host", b"api.default.isthmus"), (b"content-length", b"5"))


def test_h2_response_to_h1() -> None:
    head = h2_response_to_h1([(b":status", b"404"), (b"x", b"1")])
    assert head.status == 404 and head.headers == ((b"x", b"1"),)
    for bad in (
        [(b"x", b"1")],
        [(b":status", b"20")],
        [(b":status", b"200"), (b":status", b"200")],
        [(b":status", b"200"), (b"transfer-encoding", b"chunked")],
        [(b":status", b"200"), (b":path", b"/")],
        [(b":status", b"200"), (b"x", b"a\nb")],
    ):
        with pytest.raises(UpstreamProtocolError) as info:
            h2_response_to_h1(bad)
        assert isinstance(info.value, UpstreamError)


def test_content_length_counter() -> None:
    counter = ContentLengthCounter(5)
    counter.data(3)
    with pytest.raises(ContentLengthMismatch):
        counter.end()
    counter.data(2)
    counter.end()
    with pytest.raises(ContentLengthMismatch):
        counter.data(1)
    ContentLengthCounter(None).end()


# ---------------------------------------------------------------------------------------------
# Proxy targets
# ---------------------------------------------------------------------------------------------

PROXY_OK = [
    (
        b"GET",
        b"http://api.default.isthmus/path",
        ProxyTarget(b"http", b"api.default.isthmus", None, b"/path"),
    ),
    (
        b"GET",
        b"http://API.default.isthmus",
        ProxyTarget(b"http", b"api.default.isthmus", None, b"/"),
    ),
    (b"GET", b"HTTP://a.b.isthmus:8080?x=1", ProxyTarget(b"http", b"a.b.isthmus", 8080, b"/?x=1")),
    (b"GET", b"https://a.b.isthmus/p", ProxyTarget(b"https", b"a.b.isthmus", None, b"/p")),
    (b"GET", b"http://[::1]:80/", ProxyTarget(b"http", b"[::1]", 80, b"/")),
    (b"CONNECT", b"api.default.isthmus:443", ProxyTarget(b"", b"api.default.isthmus", 443, b"")),
]


@pytest.mark.parametrize(("method", "target", "expected"), PROXY_OK)
def test_proxy_targets(method: bytes, target: bytes, expected: ProxyTarget) -> None:
    assert parse_proxy_target(method, target) == expected


def test_proxy_target_origin_form_is_not_proxy() -> None:
    assert parse_proxy_target(b"GET", b"/x") is None
    assert parse_proxy_target(b"OPTIONS", b"*") is None
    assert ProxyTarget(b"", b"a", 443, b"").authority == b"a:443"


@pytest.mark.parametrize(
    ("method", "target"),
    [
        (b"GET", b"http://user:pw@a.b.isthmus/"),
        (b"GET", b"http:///x"),
        (b"GET", b"http://a.b.isthmus:0/"),
        (b"GET", b"http://a.b.isthmus:65536/"),
        (b"GET", b"http://a.b.isthmus:x/"),
        (b"GET", b"http://a.b.isthmus/#frag"),
        (b"GET", b"ftp://a.b.isthmus/"),
        (b"GET", b"a.b.isthmus/x"),
        (b"CONNECT", b"a.b.isthmus"),
        (b"CONNECT", b"a.b.isthmus:"),
        (b"CONNECT", b"user@a.b.isthmus:443"),
        (b"CONNECT", b"[::1:443"),
    ],
)
def test_bad_proxy_targets(method: bytes, target: bytes) -> None:
    with pytest.raises(DownstreamError):
        parse_proxy_target(method, target)


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------

NAMES = st.sampled_from(
    [
        b":method",
        b":scheme",
        b":authority",
        b":path",
        b":status",
        b":protocol",
        b"host",
        b"content-length",
        b"cookie",
        b"te",
        b"x-a",
        b"X-Up",
        b"x y",
        b"",
        *sorted(CONNECTION_SPECIFIC),
    ]
) | st.binary(max_size=12)
VALUES = st.sampled_from(
    [
        b"GET",
        b"CONNECT",
        b"http",
        b"https",
        b"/",
        b"/x",
        b"*",
        b"a.b.isthmus",
        b"a:1",
        b"5",
        b"trailers",
        b"chunked",
        b"a\r\nb",
        b" x",
        b"\x00",
    ]
) | st.binary(max_size=24)
H2_LISTS = st.lists(st.tuples(NAMES, VALUES), max_size=12)
SAFE_FIELDS = st.tuples(
    st.from_regex(rb"[a-z][a-z0-9-]{0,10}", fullmatch=True),
    st.from_regex(rb"([\x21-\x7e\x80-\xff]([\x20-\x7e]{0,10}[\x21-\x7e])?)?", fullmatch=True),
)


def _assert_safe_for_h1(head: RequestHead) -> None:
    raw = encode_request(head)
    # Our strict parser accepts it unchanged ...
    assert parse_request_head(raw) == head
    # ... and so does an independent HTTP/1.1 parser, with the same fields.
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(raw)
    event = conn.next_event()
    assert isinstance(event, h11.Request)
    assert event.method == head.method and event.target == head.target
    assert [(bytes(n), bytes(v)) for n, v in event.headers] == list(head.headers)
    names = [n for n, _ in head.headers]
    assert not set(names) & (CONNECTION_SPECIFIC | {b"te"})
    assert names.count(b"content-length") <= 1 and names.count(b"host") == 1


@settings(max_examples=400, deadline=None)
@given(H2_LISTS)
def test_h2_to_h1_never_crashes_and_output_is_safe(headers: list[tuple[bytes, bytes]]) -> None:
    try:
        head = h2_request_to_h1(headers)
    except MalformedHeaders:
        return
    _assert_safe_for_h1(head)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([b"GET", b"POST", b"OPTIONS", b"CONNECT"]),
    st.sampled_from([b"/", b"/a?b", b"*", b"a.b.isthmus:443", b"/%00"])
    | st.binary(max_size=10).map(lambda b: b"/" + b),
    st.lists(
        st.one_of(SAFE_FIELDS, SAFE_FIELDS, SAFE_FIELDS, st.tuples(NAMES, VALUES)), max_size=6
    ),
)
def test_valid_h2_with_extra_fields(
    method: bytes, path: bytes, extra: list[tuple[bytes, bytes]]
) -> None:
    if method == b"CONNECT":
        headers = [(b":method", method), (b":authority", b"a.b.isthmus:443")]
    else:
        headers = [
            (b":method", method),
            (b":scheme", b"http"),
            (b":authority", b"a.b.isthmus"),
            (b":path", path),
        ]
    headers += [(n, v) for n, v in extra if not n.startswith(b":")]
    try:
        head = h2_request_to_h1(headers)
    except MalformedHeaders:
        return
    _assert_safe_for_h1(head)


FIELD_LINES = st.lists(
    st.tuples(
        st.sampled_from(
            [
                b"Host",
                b"Connection",
                b"TE",
                b"Upgrade",
                b"Cookie",
                b"X-A",
                b"Content-Length",
                b"Keep-Alive",
            ]
        ),
        st.sampled_from(
            [b"a.b.isthmus", b"close", b"trailers", b"h2c", b"x-a", b"1", b"Keep-Alive, X-A", b""]
        ),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(
        [b"GET / ", b"POST /x?y ", b"GET http://a.b.isthmus:81/p ", b"CONNECT a.b.isthmus:443 "]
    ),
    FIELD_LINES,
)
def test_h1_to_h2_to_h1_round_trip(line: bytes, fields: list[tuple[bytes, bytes]]) -> None:
    lines = [b"Host: a.b.isthmus"] + [n + b": " + v for n, v in fields if n != b"Host"]
    raw = line + b"HTTP/1.1\r\n" + b"".join(x + b"\r\n" for x in lines) + b"\r\n"
    try:
        head = parse_request_head(raw)
        h2 = h1_request_to_h2(head)
    except DownstreamError:
        return
    names = [n for n, _ in h2]
    assert not set(names) & (CONNECTION_SPECIFIC - {b"te"})
    assert all(v == b"trailers" for n, v in h2 if n == b"te")
    back = h2_request_to_h1(h2)  # what one gateway emits, the next accepts
    _assert_safe_for_h1(back)
    assert back.method == head.method


@settings(max_examples=300, deadline=None)
@given(H2_LISTS)
def test_h2_response_and_trailers_never_crash(headers: list[tuple[bytes, bytes]]) -> None:
    for fn in (h2_response_to_h1, lambda h: h2_trailers_to_h1(h, from_upstream=False)):
        try:
            fn(headers)
        except IsthmusError as exc:
            assert isinstance(exc, (UpstreamProtocolError, MalformedHeaders))
