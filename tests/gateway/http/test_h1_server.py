"""Downstream HTTP/1.1: strict framing, limits and pipelining over in-memory streams."""

from __future__ import annotations

import re

import pytest
import trio
import trio.testing

from foundation.errors import DownstreamError
from gateway.http.h1_connection import H1Limits
from gateway.http.h1_server import H1ServerConnection
from gateway.http.message import RequestHead, ResponseHead

#: Every test here runs with llhttp and with the pure-Python head parser.
pytestmark = pytest.mark.usefixtures("h1_parser")


_STATUS = re.compile(rb"HTTP/1\.1 (\d{3}) ")


async def _serve(
    stream: trio.abc.Stream, seen: list[tuple[RequestHead, bytes]], limits: H1Limits
) -> None:
    """A tiny origin: reads each body fully and answers with what it saw."""
    conn = H1ServerConnection(stream, limits)
    try:
        for _ in range(20):
            head = await conn.next_request()
            if head is None:
                break
            body = b""
            for _ in range(10_000):
                piece = await conn.receive_body()
                if not piece:
                    break
                body += piece
            seen.append((head, body))
            text = b"%s %s %d" % (head.method, head.target, len(body))
            await conn.send_response(
                ResponseHead(200, ((b"x-seen", b"yes"),)), content_length=len(text)
            )
            await conn.send_body(text)
            await conn.end_response()
    except DownstreamError as exc:
        await conn.send_error(exc)
    finally:
        await conn.aclose()


async def exchange(
    raw: bytes, limits: H1Limits | None = None
) -> tuple[list[int], bytes, list[tuple[RequestHead, bytes]]]:
    """Send raw bytes, half-close, read everything; returns statuses, response bytes, requests."""
    client, server = trio.testing.memory_stream_pair()
    seen: list[tuple[RequestHead, bytes]] = []
    out = b""
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_serve, server, seen, limits or H1Limits())
            await client.send_all(raw)
            await client.send_eof()
            for _ in range(1000):
                data = await client.receive_some(65536)
                if not data:
                    break
                out += data
    statuses = [int(m) for m in _STATUS.findall(out)]
    return statuses, out, seen


GET = b"GET / HTTP/1.1\r\nHost: a.default.isthmus\r\n\r\n"
POST = b"POST / HTTP/1.1\r\nHost: a\r\n"
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"


async def test_simple_get_and_pipelining_in_order() -> None:
    raw = (
        GET
        + b"GET /two HTTP/1.1\r\nHost: a\r\n\r\n"
        + b"POST /three HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc"
    )
    statuses, out, seen = await exchange(raw)
    assert statuses == [200, 200, 200]
    assert [h.target for h, _ in seen] == [b"/", b"/two", b"/three"]
    assert seen[2][1] == b"abc"
    assert out.index(b"GET / 0") < out.index(b"GET /two 0") < out.index(b"POST /three 3")


async def test_request_head_is_frozen_lowercase() -> None:
    _, _, seen = await exchange(b"GET /x?y=1 HTTP/1.1\r\nHOST: a\r\nX-Thing:  v  \r\n\r\n")
    head = seen[0][0]
    assert head.headers == ((b"host", b"a"), (b"x-thing", b"v"))
    assert head.http_version == b"1.1"
    with pytest.raises(AttributeError):
        head.method = b"POST"  # type: ignore[misc]


# (name, raw request, expected status). Each must also close the connection with no
# request reaching the origin.
ATTACKS: list[tuple[str, bytes, int]] = [
    (
        "cl-conflict",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        400,
    ),
    ("cl-list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 6\r\n\r\nhello!", 400),
    (
        "cl-duplicate-same",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        400,
    ),
    ("cl-plus", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", 400),
    ("cl-negative", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", 400),
    ("cl-hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", 400),
    ("cl-huge", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
    (
        "cl-and-te",
        POST + b"Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX",
        400,
    ),
    (
        "te-and-cl",
        POST + b"Transfer-Encoding: chunked\r\nContent-Length: 6\r\n\r\n0\r\n\r\nX",
        400,
    ),
    (
        "te-chunked-identity",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te-identity-chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te-chunked-twice",
        POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te-xchunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te-chunked-quoted",
        b'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n',
        400,
    ),
    (
        "te-vtab",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\x0b\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te-space-before-colon",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te-folded",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    ("te-gzip", b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
    (
        "te-gzip-chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "te-http10",
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk-size-garbage",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk-size-negative",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk-size-0x",
        CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk-size-leading-space",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n 5\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk-size-too-long",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        + b"1" * 21
        + b"\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk-missing-crlf",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        400,
    ),
    (
        "chunk-size-understates",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
        400,
    ),
    (
        "chunk-trailer-ctl",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX-T: a\x01b\r\n\r\n",
        400,
    ),
    ("bare-lf-head", b"GET / HTTP/1.1\nHost: a\n\n", 400),
    ("bare-lf-in-header", b"GET / HTTP/1.1\r\nHost: a\nX: b\r\n\r\n", 400),
    ("bare-cr-in-header", b"GET / HTTP/1.1\r\nHost: a\rX: b\r\n\r\n", 400),
    ("bare-cr-request-line", b"GET /\r HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("nul-in-value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", 400),
    ("nul-in-target", b"GET /\x00 HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("ctl-in-value", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x1bb\r\n\r\n", 400),
    ("obs-fold", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n\r\n", 400),
    ("obs-fold-tab", b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tfolded\r\n\r\n", 400),
    ("space-before-colon", b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400),
    ("no-colon", b"GET / HTTP/1.1\r\nHost: a\r\nJunk\r\n\r\n", 400),
    ("empty-name", b"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400),
    ("double-space-request-line", b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("lowercase-http", b"GET / http/1.1\r\nHost: a\r\n\r\n", 400),
    ("http2-version", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", 505),
    ("http09", b"GET /\r\n\r\n", 400),
    ("missing-host", b"GET / HTTP/1.1\r\n\r\n", 400),
    ("two-hosts", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
    ("host-with-space", b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400),
    ("relative-target", b"GET foo HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("asterisk-get", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    ("connect-origin-form", b"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 400),
    (
        "connect-with-body",
        b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\nContent-Length: 5\r\n\r\nhello",
        400,
    ),
    ("tls-garbage", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + b"\x00" * 64, 400),
    ("binary-garbage", bytes(range(256)) * 4, 400),
    ("oversize-line", b"GET /" + b"a" * (61 * 1024) + b" HTTP/1.1\r\nHost: a\r\n\r\n", 431),
    (
        "oversize-header",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"v" * (61 * 1024) + b"\r\n\r\n",
        431,
    ),
    (
        "oversize-many-headers",
        b"GET / HTTP/1.1\r\nHost: a\r\n" + b"X: 1234567890\r\n" * 5000 + b"\r\n",
        431,
    ),
]

TRUNCATED: list[tuple[str, bytes]] = [
    ("truncated-head", b"GET / HTTP/1.1\r\nHost: a\r\n"),
    ("truncated-body", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nhello"),
    (
        "truncated-chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    ),
    (
        "truncated-trailers",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n",
    ),
]


@pytest.mark.parametrize(("name", "raw"), TRUNCATED, ids=[t[0] for t in TRUNCATED])
async def test_truncated_input_is_rejected(name: str, raw: bytes) -> None:
    statuses, _, seen = await exchange(raw)
    assert statuses == [400], name
    assert seen == []


@pytest.mark.parametrize(("name", "raw", "status"), ATTACKS, ids=[a[0] for a in ATTACKS])
async def test_bad_input_is_rejected_and_connection_closed(
    name: str, raw: bytes, status: int
) -> None:
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"
    statuses, out, seen = await exchange(raw + smuggled)
    assert statuses == [status], (name, out[:300])
    assert b"connection: close" in out.lower()
    assert b"\r\n\r\n%d " % status in out or b": " in out  # a body that says why
    body = out.split(b"\r\n\r\n", 1)[1]
    assert body.startswith(b"%d " % status) and len(body) > 10
    # Nothing after the bad message was parsed as a request; for head-level attacks not even
    # the bad message reached the origin.
    assert all(h.target != b"/smuggled" for h, _ in seen)
    assert len(seen) == 0


async def test_smuggled_second_request_never_parsed() -> None:
    # Classic CL.TE: a front end using CL would forward "0\r\n\r\nGET /admin..." as body.
    raw = (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
    )
    statuses, out, seen = await exchange(raw)
    assert statuses == [400]
    assert seen == []
    assert b"/admin" not in out


async def test_chunked_body_and_trailers_and_following_request() -> None:
    raw = (
        b"POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: abc\r\n\r\n" + GET
    )
    client, server = trio.testing.memory_stream_pair()
    conn = H1ServerConnection(server)
    await client.send_all(raw)
    head = await conn.next_request()
    assert head is not None and head.target == b"/up"
    body = b""
    for _ in range(10):
        piece = await conn.receive_body()
        if not piece:
            break
        body += piece
    assert body == b"hello world"
    assert conn.trailers == ((b"x-checksum", b"abc"),)
    await conn.send_response(ResponseHead(200, ()))  # unknown length -> chunked
    await conn.send_body(b"ok")
    await conn.end_response(trailers=((b"x-done", b"1"),))
    assert conn.keep_alive
    second = await conn.next_request()
    assert second is not None and second.target == b"/"
    resp = await client.receive_some(65536)
    assert b"transfer-encoding: chunked" in resp.lower()
    assert resp.endswith(b"2\r\nok\r\n0\r\nx-done: 1\r\n\r\n")


async def test_100_headers_ok_101_rejected() -> None:
    ok = (
        b"GET / HTTP/1.1\r\nHost: a\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(99)) + b"\r\n"
    )
    statuses, _, seen = await exchange(ok)
    assert statuses == [200] and len(seen[0][0].headers) == 100
    bad = (
        b"GET / HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-%d: v\r\n" % i for i in range(100))
        + b"\r\n"
    )
    statuses, _, seen = await exchange(bad)
    assert statuses == [431] and seen == []


async def test_head_byte_limit_boundary() -> None:
    limits = H1Limits(max_head_bytes=4096)
    base = b"GET / HTTP/1.1\r\nHost: a\r\nX: \r\n\r\n"
    fits = base.replace(b"X: ", b"X: " + b"v" * (4096 - len(base)))
    assert len(fits) == 4096
    statuses, _, _ = await exchange(fits, limits)
    assert statuses == [200]
    over = base.replace(b"X: ", b"X: " + b"v" * (4097 - len(base)))
    statuses, _, _ = await exchange(over, limits)
    assert statuses == [431]


async def test_slowloris_head_gets_408_at_timeout(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    seen: list[tuple[RequestHead, bytes]] = []
    start = trio.current_time()
    out = b""
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_serve, server, seen, H1Limits())

        async def trickle() -> None:
            for byte in GET[:-2]:  # never completes the head
                try:
                    await client.send_all(bytes([byte]))
                except trio.BrokenResourceError:
                    return
                await trio.sleep(0.5)

        nursery.start_soon(trickle)
        for _ in range(1000):
            data = await client.receive_some(65536)
            if not data:
                break
            out += data
            if out.endswith(b"\n") and b"408" in out:
                elapsed = trio.current_time() - start
        nursery.cancel_scope.cancel()
    assert out.startswith(b"HTTP/1.1 408 ")
    assert 10.0 <= elapsed < 10.6
    assert seen == []


async def test_garbage_fails_fast_not_at_timeout(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = H1ServerConnection(server)
    await client.send_all(b"\x16\x03\x01\x00")  # a TLS record on a plaintext port
    start = trio.current_time()
    with pytest.raises(DownstreamError) as info:
        await conn.next_request()
    assert info.value.http_status == 400
    assert trio.current_time() - start < 0.01


async def test_idle_keepalive_closes_quietly(autojump_clock: trio.abc.Clock) -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = H1ServerConnection(server, H1Limits(idle_timeout_s=30))
    await client.send_all(GET)
    assert await conn.next_request() is not None
    assert await conn.receive_body() == b""
    await conn.send_response(ResponseHead(204, ()))
    await conn.end_response()
    start = trio.current_time()
    assert await conn.next_request() is None
    assert 30 <= trio.current_time() - start < 31


async def test_upgrade_h2c_not_honoured() -> None:
    raw = (
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade, HTTP2-Settings\r\n"
        b"Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\n\r\n" + GET
    )
    statuses, out, seen = await exchange(raw)
    assert statuses == [200, 200]
    assert b"101" not in out.split(b"\r\n")[0]
    assert len(seen) == 2


async def test_expect_100_continue_sent_on_first_body_read() -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = H1ServerConnection(server)
    await client.send_all(
        b"PUT / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n"
    )
    assert await conn.next_request() is not None
    async with trio.open_nursery() as nursery:

        async def caller() -> None:
            interim = await client.receive_some(65536)
            assert interim.startswith(b"HTTP/1.1 100 ")
            await client.send_all(b"ok")

        nursery.start_soon(caller)
        assert await conn.receive_body() == b"ok"
    assert await conn.receive_body() == b""


async def test_connect_returns_early_bytes() -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = H1ServerConnection(server)
    await client.send_all(
        b"CONNECT api.default.isthmus:443 HTTP/1.1\r\n"
        b"Host: api.default.isthmus:443\r\n\r\n\x16\x03\x01"
    )
    head = await conn.next_request()
    assert head is not None and head.method == b"CONNECT"
    early = await conn.accept_connect()
    assert early == b"\x16\x03\x01"
    assert (await client.receive_some(65536)).startswith(b"HTTP/1.1 200 ")
    assert not conn.keep_alive


async def test_head_and_body_and_end_in_one_write() -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = H1ServerConnection(server)
    await client.send_all(GET + b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n")
    assert await conn.next_request() is not None
    await conn.send_response(ResponseHead(200, ()), content_length=2, body=b"ok", end=True)
    assert await client.receive_some(65536) == (b"HTTP/1.1 200 \r\ncontent-length: 2\r\n\r\nok")
    head = await conn.next_request()
    assert head is not None and head.method == b"HEAD"
    # A HEAD response keeps its Content-Length but never carries the body.
    await conn.send_response(ResponseHead(200, ()), content_length=2, body=b"ok", end=True)
    assert await client.receive_some(65536) == b"HTTP/1.1 200 \r\ncontent-length: 2\r\n\r\n"
    assert conn.keep_alive


async def test_pipelined_request_survives_a_handler_that_skips_the_final_body_read() -> None:
    client, server = trio.testing.memory_stream_pair()
    conn = H1ServerConnection(server)
    await client.send_all(POST + b"Content-Length: 3\r\n\r\nabc" + GET)
    assert await conn.next_request() is not None
    assert await conn.receive_body() == b"abc"  # the handler stops here (knows the length)
    await conn.send_response(ResponseHead(200, ()), content_length=0, end=True)
    second = await conn.next_request()
    assert second is not None and second.method == b"GET"


async def test_response_before_body_read_closes_connection() -> None:
    """Answering without reading the body (e.g. a 404) must not let the unread body be
    parsed as the next request."""
    client, server = trio.testing.memory_stream_pair()
    conn = H1ServerConnection(server)
    smuggle = b"GET /admin HTTP/1.1\r\nHost: a\r\n\r\n"
    await client.send_all(POST + b"Content-Length: %d\r\n\r\n" % len(smuggle) + smuggle)
    await client.send_eof()
    assert await conn.next_request() is not None
    await conn.send_response(ResponseHead(404, ()), content_length=0, end=True)
    assert not conn.keep_alive
    assert await conn.next_request() is None


async def test_http10_closes_after_response() -> None:
    statuses, _, seen = await exchange(b"GET / HTTP/1.0\r\n\r\n" + GET)
    assert statuses == [200] and len(seen) == 1


async def test_large_chunked_body_streams_with_bounded_pieces() -> None:
    """32 MiB chunked over a lockstep stream (no buffering in the pipe): every piece is
    bounded and the connection's own buffer never grows past one read."""
    client, server = trio.testing.lockstep_stream_pair()
    conn = H1ServerConnection(server)
    total = 32 * 1024 * 1024
    block = b"x" * 65536
    chunk = b"%x\r\n" % len(block) + block + b"\r\n"

    async def sender() -> None:
        await client.send_all(b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(total // len(block)):
            await client.send_all(chunk)
        await client.send_all(b"0\r\n\r\n")

    received = 0
    biggest = 0
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sender)
            assert await conn.next_request() is not None
            for _ in range(total):
                piece = await conn.receive_body()
                if not piece:
                    break
                received += len(piece)
                biggest = max(biggest, len(piece), len(conn._buf))
    assert received == total
    assert biggest <= 2 * 65536
