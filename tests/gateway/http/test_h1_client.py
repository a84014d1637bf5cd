"""Upstream HTTP/1.1 (client role): what we send, and strict parsing of what comes back."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from foundation.errors import UpstreamError
from gateway.http.errors import UpstreamClosed, UpstreamProtocolError
from gateway.http.h1_client import H1ClientConnection
from gateway.http.h1_connection import H1Limits
from gateway.http.headers import parse_request_head
from gateway.http.message import RequestHead

#: Every test here runs with llhttp and with the pure-Python head parser.
pytestmark = pytest.mark.usefixtures("h1_parser")


HEAD = RequestHead(
    b"POST",
    b"/p",
    b"1.1",
    (
        (b"host", b"api.default.isthmus"),
        (b"connection", b"x-hop"),
        (b"x-hop", b"1"),
        (b"upgrade", b"h2c"),
        (b"http2-settings", b"AAMA"),
        (b"keep-alive", b"5"),
        (b"transfer-encoding", b"gzip"),
        (b"content-length", b"999"),
        (b"x-keep", b"yes"),
    ),
)


async def _read_head(stream: trio.abc.ReceiveStream) -> bytes:
    data = b""
    for _ in range(1000):
        if b"\r\n\r\n" in data:
            break
        data += await stream.receive_some(65536)
    return data


async def test_request_is_reframed_and_hop_by_hop_dropped() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    conn = H1ClientConnection(ours)
    await conn.send_request(HEAD, content_length=5)
    await conn.send_body(b"hello")
    await conn.end_request()
    raw = await _read_head(theirs)
    head_bytes, _, body = raw.partition(b"\r\n\r\n")
    head = parse_request_head(head_bytes + b"\r\n\r\n")
    names = [n for n, _ in head.headers]
    assert names == [b"host", b"x-keep", b"content-length", b"te", b"connection"]
    assert head.get(b"content-length") == b"5" and body == b"hello"


async def test_unknown_length_body_is_chunked_with_trailers() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    conn = H1ClientConnection(ours)
    await conn.send_request(HEAD, content_length=None)
    await conn.send_body(b"abc")
    await conn.end_request(trailers=((b"x-sum", b"1"), (b"content-length", b"3")))
    raw = b""
    for _ in range(100):
        raw += await theirs.receive_some(65536)
        if raw.endswith(b"\r\n\r\n") and b"0\r\n" in raw:
            break
    assert b"transfer-encoding: chunked" in raw.lower()
    assert raw.endswith(b"3\r\nabc\r\n0\r\nx-sum: 1\r\n\r\n")


async def _respond(
    raw: bytes, *, method: bytes = b"GET", close: bool = True
) -> tuple[H1ClientConnection, list[bytes | Exception]]:
    ours, theirs = trio.testing.memory_stream_pair()
    conn = H1ClientConnection(ours)
    head = RequestHead(method, b"/", b"1.1", ((b"host", b"a"),))
    await conn.send_request(head, has_body=False)
    await conn.end_request()
    await theirs.send_all(raw)
    if close:
        await theirs.send_eof()
    return conn, []


async def test_reads_response_with_length_then_reuses() -> None:
    conn, _ = await _respond(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX: y\r\n\r\nok", close=False)
    response = await conn.receive_response()
    assert response.status == 200 and response.get(b"x") == b"y"
    assert await conn.receive_body() == b"ok"
    assert await conn.receive_body() == b""
    assert conn.reusable


async def test_skips_100_continue_and_reads_chunked_trailers() -> None:
    conn, _ = await _respond(
        b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"3\r\nabc\r\n0\r\nX-Sum: 9\r\n\r\n"
    )
    response = await conn.receive_response()
    assert response.status == 201
    assert await conn.receive_body() == b"abc"
    assert await conn.receive_body() == b""
    assert conn.trailers == ((b"x-sum", b"9"),)


async def test_close_delimited_body() -> None:
    conn, _ = await _respond(b"HTTP/1.1 200 OK\r\n\r\nuntil close")
    await conn.receive_response()
    body = b""
    for _ in range(10):
        piece = await conn.receive_body()
        if not piece:
            break
        body += piece
    assert body == b"until close"
    assert not conn.reusable


async def test_head_response_has_no_body() -> None:
    conn, _ = await _respond(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", method=b"HEAD", close=False
    )
    response = await conn.receive_response()
    assert response.get(b"content-length") == b"100"
    assert await conn.receive_body() == b""


async def test_closed_before_response_is_retryable() -> None:
    conn, _ = await _respond(b"")
    with pytest.raises(UpstreamClosed) as info:
        await conn.receive_response()
    assert info.value.response_started is False
    assert info.value.http_status == 502


async def test_closed_mid_body() -> None:
    conn, _ = await _respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    await conn.receive_response()
    assert await conn.receive_body() == b"abc"
    with pytest.raises(UpstreamClosed) as info:
        await conn.receive_body()
    assert info.value.response_started is True


BAD_RESPONSES = [
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nabc",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\nContent-Length: 0\n\n",
    b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
    b"HTTP/1.1 20 OK\r\n\r\n",
    b"HTTP/2 200\r\n\r\n",
    b"ICY 200 OK\r\n\r\n",
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 101 + b"\r\n",
    b"HTTP/1.1 200 OK\r\nX: " + b"v" * 70000 + b"\r\n\r\n",
]


@pytest.mark.parametrize("raw", BAD_RESPONSES)
async def test_malformed_responses_are_typed_upstream_errors(raw: bytes) -> None:
    conn, _ = await _respond(raw)
    with pytest.raises(UpstreamError) as info:
        await conn.receive_response()
        for _ in range(10):
            if not await conn.receive_body():
                break
    assert info.value.http_status == 502
    assert isinstance(info.value, (UpstreamProtocolError, UpstreamClosed))
    assert not conn.reusable


async def test_response_head_limit_is_a_parameter() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    conn = H1ClientConnection(ours, H1Limits(max_head_bytes=2048))
    await conn.send_request(RequestHead(b"GET", b"/", b"1.1", ((b"host", b"a"),)), has_body=False)
    await conn.end_request()
    await theirs.send_all(b"HTTP/1.1 200 OK\r\nX: " + b"v" * 3000 + b"\r\n\r\n")
    with pytest.raises(UpstreamProtocolError):
        await conn.receive_response()
