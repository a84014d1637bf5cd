"""Property tests for the HTTP/1.1 front end: never crash, never disagree on message bounds.

The anti-smuggling property: for every byte stream, the requests our server accepts (head and
body) are a prefix of what a lenient parser (h11 alone) reads from the same bytes. So any
parser downstream of us that is at least as strict as h11 sees exactly the same messages; and
since the upstream only ever receives messages we re-serialise, it cannot see a second one.
"""

from __future__ import annotations

import h11
import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.errors import DownstreamError, IsthmusError
from gateway.http.h1_connection import H1Limits
from gateway.http.h1_server import H1ServerConnection
from gateway.http.headers import parse_request_head
from gateway.http.message import ResponseHead

#: Every test here runs with llhttp and with the pure-Python head parser.
pytestmark = pytest.mark.usefixtures("h1_parser")


Seen = list[tuple[bytes, bytes, bytes]]  # (method, target, body)

START = st.sampled_from(
    [
        b"GET / HTTP/1.1",
        b"POST /a HTTP/1.1",
        b"POST /b HTTP/1.0",
        b"GET /x HTTP/1.1 ",
        b" GET / HTTP/1.1",
    ]
)
FIELDS = st.sampled_from(
    [
        b"Host: a",
        b"Host: b",
        b"Content-Length: 5",
        b"Content-Length: 0",
        b"Content-Length: 5, 5",
        b"Content-Length:  3 ",
        b"Content-Length: +3",
        b"Transfer-Encoding: chunked",
        b"Transfer-Encoding: Chunked ",
        b"Transfer-Encoding: chunked, identity",
        b"Transfer-Encoding:\tchunked",
        b"Transfer-Encoding : chunked",
        b"Transfer-Encoding: \x0bchunked",
        b" chunked",
        b"Connection: close",
        b"Expect: 100-continue",
        b"X: a\x00b",
        b"X: a\rb",
        b"X: ok",
    ]
)
EOL = st.sampled_from([b"\r\n"] * 12 + [b"\n", b"\r"])
BODY = st.sampled_from(
    [
        b"",
        b"hello",
        b"5\r\nhello\r\n0\r\n\r\n",
        b"0\r\n\r\n",
        b"3\r\nabc\r\n0\r\nT: 1\r\n\r\n",
        b"zz\r\n",
        b"abc",
    ]
)


@st.composite
def request_streams(draw: st.DrawFn) -> bytes:
    out = b""
    for _ in range(draw(st.integers(1, 3))):
        eol = draw(EOL)
        start = draw(st.sampled_from([b"GET / HTTP/1.1", b"POST /p HTTP/1.1"]) | START)
        lines = [start, b"Host: h", *draw(st.lists(FIELDS, max_size=3))]
        out += eol.join(lines) + eol + (eol if draw(st.booleans()) else draw(EOL)) + draw(BODY)
    return out


def _ours(raw: bytes) -> tuple[Seen, bool]:
    seen: Seen = []
    clean = True

    async def main() -> None:
        nonlocal clean
        client, server = trio.testing.memory_stream_pair()
        await client.send_all(raw)
        await client.send_eof()
        conn = H1ServerConnection(server, H1Limits(max_head_bytes=4096))
        try:
            for _ in range(10):
                head = await conn.next_request()
                if head is None:
                    break
                body = b""
                for _ in range(100):
                    piece = await conn.receive_body()
                    if not piece:
                        break
                    body += piece
                seen.append((head.method, head.target, body))
                await conn.send_response(ResponseHead(204, ()))
                await conn.end_response()
        except DownstreamError:
            clean = False
        # Anything else (a crash) propagates and fails the test.

    trio.run(main)
    return seen, clean


def _h11(raw: bytes) -> Seen:
    """h11 alone, plus the one leniency RFC 9112 section 2.2 asks of servers (and we have):
    empty lines before a request line are ignored."""
    seen: Seen = []
    rest = raw
    for _ in range(20):
        while rest.startswith(b"\r\n"):
            rest = rest[2:]
        if not rest:
            break
        conn = h11.Connection(h11.SERVER)
        conn.receive_data(rest)
        conn.receive_data(b"")
        method = target = body = b""
        try:
            for _ in range(1000):
                event = conn.next_event()
                if isinstance(event, h11.Request):
                    method, target = event.method, event.target
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    seen.append((method, target, body))
                    break
                else:
                    return seen
        except (h11.ProtocolError, RuntimeError):
            return seen
        if conn.our_state is not h11.SEND_RESPONSE:
            return seen
        # HTTP/1.0 or Connection: close ends the stream after this request.
        conn.send(h11.Response(status_code=204, headers=[]))
        conn.send(h11.EndOfMessage())
        if conn.our_state is not h11.DONE:
            return seen
        rest = conn.trailing_data[0]
    return seen


@settings(max_examples=600, deadline=None)
@given(request_streams())
def test_accepted_requests_match_a_lenient_parser(raw: bytes) -> None:
    ours, _clean = _ours(raw)
    theirs = _h11(raw)
    assert ours == theirs[: len(ours)], (ours, theirs)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_crash_the_front_end(raw: bytes) -> None:
    _ours(raw)


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200))
def test_head_parser_only_raises_typed_errors(raw: bytes) -> None:
    for candidate in (raw, b"GET / HTTP/1.1\r\n" + raw + b"\r\n\r\n"):
        try:
            head = parse_request_head(candidate)
        except IsthmusError as exc:
            assert 400 <= exc.http_status < 600
            continue
        assert all(n == n.lower() for n, _ in head.headers)
