"""llhttp (httptools) as the head tokeniser: never more lenient than the reference parser.

The reference is ``headers.parse_request_head``/``parse_response_head``; ``h1_fast`` must give,
for every input, the same head or an error of the same type (the type decides the answer,
``rescue.py``).  Generated heads mix valid fields with the classic smuggling and injection
shapes; the server and client suites run over both parsers as well (``h1_parser``).
"""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from foundation.errors import IsthmusError
from gateway.config.model import LimitsConfig
from gateway.http import h1_fast
from gateway.http.errors import BadFraming, BadRequest, HeadersTooLarge, UnsupportedVersion
from gateway.http.headers import parse_request_head, parse_response_head

pytestmark = pytest.mark.skipif(not h1_fast.AVAILABLE, reason="httptools is not installed")

MAX_HEADERS = 6
GET_A = b"GET / HTTP/1.1\r\nHost: a\r\n"

REQUEST_LINES = st.sampled_from(
    [
        b"GET / HTTP/1.1",
        b"POST /a?b=c HTTP/1.1",
        b"GET / HTTP/1.0",
        b"FOO /custom HTTP/1.1",
        b"GET  / HTTP/1.1",
        b"GET / HTTP/1.1 ",
        b"GET / HTTP/2.0",
        b"GET / http/1.1",
        b"GET /\x80 HTTP/1.1",
        b"GET http://api.default.isthmus/p HTTP/1.1",
        b"CONNECT api.default.isthmus:443 HTTP/1.1",
        b"CONNECT /x HTTP/1.1",
        b"OPTIONS * HTTP/1.1",
        b"GET * HTTP/1.1",
        b"GET /a#b HTTP/1.1",
    ]
)
STATUS_LINES = st.sampled_from(
    [
        b"HTTP/1.1 200 OK",
        b"HTTP/1.1 200 ",
        b"HTTP/1.1 200",
        b"HTTP/1.1 200 OK ",
        b"HTTP/1.0 404 Not Found",
        b"HTTP/1.1 099 Low",
        b"HTTP/1.1 1000 Big",
        b"HTTP/2.0 200 OK",
        b"HTTP/1.1  200 OK",
        b"HTTP/1.1 204 No Content",
        b"HTTP/1.1 101 Switching Protocols",
        b"HTTP/1.1 200 O\x01K",
        b"HTTP/1.1 200 \xe9t\xe9",
    ]
)
FIELDS = st.sampled_from(
    [
        b"Host: a",
        b"Host: api.default.isthmus:80",
        b"Host: a b",
        b"Host:",
        b"Content-Length: 5",
        b"Content-Length: 0",
        b"Content-Length: 5, 5",
        b"Content-Length:  3 ",
        b"Content-Length: +3",
        b"Content-Length: 1234567890123456789",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: Chunked ",
        b"Transfer-Encoding: chunked, identity",
        b"Transfer-Encoding: gzip",
        b"Transfer-Encoding:\tchunked",
        b"Transfer-Encoding : chunked",
        b"Transfer-Encoding: \x0bchunked",
        b" folded",
        b"\tfolded",
        b"Connection: close",
        b"Connection: upgrade",
        b"Upgrade: websocket",
        b"Expect: 100-continue",
        b"X: a\x00b",
        b"X: a\x7fb",
        b"X: a\x01b",
        b"X: \xe9t\xe9",
        b"X:  padded \t",
        b"X:",
        b": no-name",
        b"X-\xe9: 1",
        b"Bad Name: 1",
        b"X: ok",
        b"no-colon",
    ]
)


def _outcome(parse: object, raw: bytes) -> tuple[str, object]:
    try:
        return "head", parse(raw, max_headers=MAX_HEADERS)  # type: ignore[operator]
    except IsthmusError as exc:
        return "error", type(exc)


@settings(max_examples=1500, deadline=None)
@given(REQUEST_LINES, st.lists(FIELDS, max_size=8))
@example(b"GET / HTTP/1.1", [b"Host: a", b"Content-Length: 5", b"Transfer-Encoding: chunked"])
@example(b"POST / HTTP/1.1", [b"Host: a", b"Transfer-Encoding: gzip"])
@example(b"GET / HTTP/1.1", [b"Host: a", b"X: a", b" folded"])
def test_requests_the_same_head_or_the_same_error(line: bytes, fields: list[bytes]) -> None:
    raw = b"\r\n".join([line, *fields]) + b"\r\n\r\n"
    assert _outcome(h1_fast.parse_request_head_fast, raw) == _outcome(parse_request_head, raw)


@settings(max_examples=1000, deadline=None)
@given(STATUS_LINES, st.lists(FIELDS, max_size=8))
def test_responses_the_same_head_or_the_same_error(line: bytes, fields: list[bytes]) -> None:
    raw = b"\r\n".join([line, *fields]) + b"\r\n\r\n"
    assert _outcome(h1_fast.parse_response_head_fast, raw) == _outcome(parse_response_head, raw)


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (GET_A + b"Content-Length: 1\r\nTransfer-Encoding: chunked\r\n", BadFraming),
        (GET_A + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", BadFraming),
        (b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n", BadFraming),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n", BadRequest),
        (b"GET / HTTP/1.1\r\n" + b"X: 1\r\n" * MAX_HEADERS + b"Host: a\r\n", HeadersTooLarge),
        (b"GET / HTTP/3.0\r\nHost: a\r\n", UnsupportedVersion),
    ],
)  # fmt: skip
def test_smuggling_and_limits_are_refused_with_the_reference_error(
    raw: bytes, error: type[IsthmusError]
) -> None:
    with pytest.raises(error):
        h1_fast.parse_request_head_fast(raw + b"\r\n", max_headers=MAX_HEADERS)


def test_the_choice_of_parser() -> None:
    assert h1_fast.head_parsers("python") == (parse_request_head, parse_response_head)
    assert h1_fast.head_parsers("auto")[0] is h1_fast.parse_request_head_fast
    assert h1_fast.head_parsers("httptools")[1] is h1_fast.parse_response_head_fast
    assert LimitsConfig().http1_parser == "auto"
