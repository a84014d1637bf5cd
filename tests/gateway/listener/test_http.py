"""The HTTP listener with real callers on 127.0.0.1: HTTP/1.1, h2c, proxy mode, CONNECT, caps.

The callers write raw bytes (so nothing in the test client can hide a gateway bug) or run a
real HTTP/2 client connection; behind the gateway sit a real HTTP/1.1 echo endpoint (local
site) and a real HTTP/2 peer link (remote site).
"""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace

import h2.config
import h2.connection
import h2.errors
import h2.events
import pytest
import trio

from gateway.config.model import LimitsConfig
from tests.gateway.listener.listener_kit import (
    h2c_request,
    http_listener,
    raw_exchange,
)
from tests.gateway.router.router_kit import (
    API,
    DB,
    TEST_LIMITS,
    StandInCluster,
    http_echo_backend,
    make_router,
    peer,
    peer_echo,
    serving,
    tcp_echo_backend,
)

#: Every test here runs with llhttp and with the pure-Python head parser.
pytestmark = pytest.mark.usefixtures("h1_parser")

WEB = type(API)("web", "default")


@asynccontextmanager
async def gateway(limits: LimitsConfig = TEST_LIMITS) -> AsyncIterator[tuple[int, StandInCluster]]:
    """A listener routing api (local first) and web (peer b) and db (tcp, local)."""
    async with (
        serving(http_echo_backend) as http_port,
        serving(tcp_echo_backend) as tcp_port,
        peer(peer_echo("b")) as link,
    ):
        cluster = StandInCluster(http={API: http_port}, tcp={DB: tcp_port})
        router = make_router(
            {API: ("a", "b"), WEB: ("b",), DB: ("a",)},
            cluster=cluster,
            links={"b": link},
            known=lambda s: s in (API, WEB, DB, type(API)("gone", "default")),
        )
        async with http_listener(router, limits=limits) as port:
            yield port, cluster


def names(doc: dict[str, object]) -> list[str]:
    return [n for n, _ in doc["headers"]]  # type: ignore[attr-defined]


def header(doc: dict[str, object], name: str) -> list[str]:
    return [v for n, v in doc["headers"] if n == name]  # type: ignore[attr-defined]


async def test_http11_caller_reaches_local_and_remote_echo() -> None:
    async with gateway() as (port, _):
        status, _, body = await raw_exchange(
            port, b"GET /x HTTP/1.1\r\nHost: api.default.isthmus\r\nConnection: close\r\n\r\n"
        )
        assert status == 200 and json.loads(body)["site"] == "a"
        status, _, body = await raw_exchange(
            port,
            b"POST /y HTTP/1.1\r\nHost: web.default.isthmus\r\nConnection: close\r\n"
            b"Content-Length: 5\r\n\r\nhello",
        )
        doc = json.loads(body)
        assert status == 200 and doc["site"] == "b" and doc["body"] == "hello"


async def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    async with gateway() as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            for i in range(3):
                await stream.send_all(b"GET /%d HTTP/1.1\r\nHost: web.default.isthmus\r\n\r\n" % i)
                data = b""
                with trio.fail_after(5):
                    while b"\r\n\r\n" not in data or not data.endswith(b"}"):
                        data += await stream.receive_some(65536)
                assert json.loads(data.partition(b"\r\n\r\n")[2])["path"] == f"/{i}"


async def test_caller_set_isthmus_headers_never_reach_upstream() -> None:
    forged = (
        b"Isthmus-Caller-Id: spiffe://evil.test/admin\r\n"
        b"isthmus-caller-site: evil\r\nISTHMUS-DEADLINE-MS: 99999999\r\n"
    )
    async with gateway() as (port, _):
        for host in (b"api.default.isthmus", b"web.default.isthmus"):
            status, _, body = await raw_exchange(
                port, b"GET / HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n" % (host, forged)
            )
            doc = json.loads(body)
            assert status == 200
            assert header(doc, "isthmus-caller-id") == []
            if doc["site"] == "a":  # a local endpoint never sees any isthmus-* header
                assert not [n for n in names(doc) if n.startswith("isthmus-")]
            else:  # a peer sees only the gateway's own values
                assert header(doc, "isthmus-caller-site") == ["a"]
                assert int(header(doc, "isthmus-deadline-ms")[0]) <= 5000


async def test_caller_set_x_isthmus_caller_headers_reach_neither_endpoint_nor_peer() -> None:
    """The ``x-isthmus-*`` values an endpoint reads are the delivering gateway's: what a
    caller typed is removed at the entry, so neither a local endpoint nor a peer gets it."""
    forged = [
        (b"x-isthmus-caller-id", b"spiffe://evil.test/admin"),
        (b"x-isthmus-caller-site", b"evil"),
        (b"x-isthmus-deadline-ms", b"99999999"),
    ]
    raw = b"".join(n.upper() + b": " + v + b"\r\n" for n, v in forged)
    async with gateway() as (port, _):
        for host, site in ((b"api.default.isthmus", "a"), (b"web.default.isthmus", "b")):
            status, _, body = await raw_exchange(
                port, b"GET / HTTP/1.1\r\nHost: %s\r\n%sConnection: close\r\n\r\n" % (host, raw)
            )
            doc = json.loads(body)
            assert status == 200 and doc["site"] == site
            assert not [n for n in names(doc) if n.startswith("x-isthmus-")], doc["headers"]
            response, data = await h2c_request(
                port,
                [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", host),
                 (b":path", b"/h2"), *forged],
                b"",
            )  # fmt: skip
            doc = json.loads(data)
            assert response[b":status"] == b"200" and doc["site"] == site
            assert not [n for n in names(doc) if n.startswith("x-isthmus-")], doc["headers"]


async def test_proxy_mode_absolute_form() -> None:
    async with gateway() as (port, _):
        status, _, body = await raw_exchange(
            port,
            b"GET http://web.default.isthmus/p?q=1 HTTP/1.1\r\nHost: web.default.isthmus\r\n"
            b"Proxy-Connection: keep-alive\r\nConnection: close\r\n\r\n",
        )
        doc = json.loads(body)
        assert status == 200 and doc["site"] == "b" and doc["path"] == "/p?q=1"
        assert header(doc, ":authority") == ["web.default.isthmus"]
        assert "proxy-connection" not in names(doc)


async def test_connect_tunnel_with_half_close() -> None:
    async with gateway() as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                b"CONNECT db.default.isthmus:5432 HTTP/1.1\r\nHost: db.default.isthmus:5432\r\n"
                b"\r\nearly bytes;"
            )
            await stream.send_all(b"later bytes")
            await stream.send_eof()
            data = b""
            with trio.fail_after(5):
                while piece := await stream.receive_some(65536):
                    data += piece
        head, _, tunnel = data.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200")
        assert tunnel == b"early bytes;later bytes"


async def test_connect_to_unknown_address_is_404() -> None:
    async with gateway() as (port, _):
        status, _, body = await raw_exchange(
            port, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n"
        )
    assert status == 404 and b"example.com" in body


@pytest.mark.parametrize(
    "upgrade",
    [
        b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
        b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n",
        b"Connection: Upgrade\r\nUpgrade: foo\r\n",
        b"Connection: Upgrade\r\nUpgrade: websocket, h2c\r\n",
        b"Upgrade: TLS/1.0\r\n",  # not even named in Connection: still never dropped silently
    ],
)
async def test_unsupported_upgrade_is_501_and_never_forwarded(upgrade: bytes) -> None:
    async with gateway() as (port, cluster):
        status, _, body = await raw_exchange(
            port, b"GET / HTTP/1.1\r\nHost: api.default.isthmus\r\n" + upgrade + b"\r\n"
        )
        assert status == 501 and b"only 'websocket'" in body
        assert cluster.calls == []  # not turned into a plain GET
        # The listener keeps serving (a new connection; the refused one was closed).
        status, _, _ = await raw_exchange(
            port, b"GET / HTTP/1.1\r\nHost: api.default.isthmus\r\nConnection: close\r\n\r\n"
        )
        assert status == 200 and len(cluster.calls) == 1


async def test_http2_settings_without_upgrade_is_dropped() -> None:
    async with gateway() as (port, _):
        status, _, body = await raw_exchange(
            port,
            b"GET / HTTP/1.1\r\nHost: api.default.isthmus\r\nConnection: HTTP2-Settings, close"
            b"\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        )
        assert status == 200
        assert "http2-settings" not in names(json.loads(body))


async def test_unknown_address_404_and_unhealthy_503_with_clear_bodies() -> None:
    async with gateway() as (port, _):
        status, _, body = await raw_exchange(
            port, b"GET / HTTP/1.1\r\nHost: nope.default.isthmus\r\n\r\n"
        )
        assert status == 404 and b"nope.default.isthmus" in body
        status, _, body = await raw_exchange(
            port, b"GET / HTTP/1.1\r\nHost: www.example.com\r\n\r\n"
        )
        assert status == 404 and b"www.example.com" in body and b"not a service address" in body
        status, _, body = await raw_exchange(
            port, b"GET / HTTP/1.1\r\nHost: gone.default.isthmus\r\n\r\n"
        )
        assert status == 503 and b"no healthy endpoint" in body


@pytest.mark.usefixtures("caller_engine")
async def test_h2c_prior_knowledge_caller_reaches_local_and_remote() -> None:
    async with gateway() as (port, _):
        for authority, site in ((b"api.default.isthmus", "a"), (b"web.default.isthmus", "b")):
            response, data = await h2c_request(
                port,
                [
                    (b":method", b"POST"),
                    (b":scheme", b"http"),
                    (b":authority", authority),
                    (b":path", b"/h2"),
                    (b"isthmus-caller-id", b"spiffe://evil.test/x"),
                ],
                b"payload",
            )
            assert response[b":status"] == b"200"
            doc = json.loads(data)
            assert doc["site"] == site and doc["body"] == "payload" and doc["path"] == "/h2"
            assert header(doc, "isthmus-caller-id") == []


@pytest.mark.usefixtures("caller_engine")
async def test_h2c_unknown_address_gets_404_response() -> None:
    async with gateway() as (port, _):
        response, data = await h2c_request(
            port,
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"nope.other"),
                (b":path", b"/"),
            ],
        )
    assert response[b":status"] == b"404" and b"nope.other" in data


@pytest.mark.usefixtures("caller_engine")
async def test_h2c_malformed_request_fails_alone_not_the_callers_connection() -> None:
    """RFC 9113 section 8.1.1: the bad request is reset; the caller's other request on the same
    connection is still answered (h2 on its own would have ended the whole connection)."""
    lax = h2.connection.H2Connection(
        h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    get = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"api.default.isthmus"),
        (b":path", b"/ok"),
    ]
    async with gateway() as (port, _):
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        async with tcp:
            lax.initiate_connection()
            lax.send_headers(1, [*get, (b"X-Upper-Case", b"1")], end_stream=True)
            lax.send_headers(3, get, end_stream=True)
            await tcp.send_all(lax.data_to_send())
            events: list[h2.events.Event] = []
            with trio.fail_after(5):
                while not any(isinstance(e, h2.events.StreamEnded) for e in events):
                    events += lax.receive_data(await tcp.receive_some(65536))
                    await tcp.send_all(lax.data_to_send())
    resets = [(e.stream_id, e.error_code) for e in events if isinstance(e, h2.events.StreamReset)]
    assert resets == [(1, h2.errors.ErrorCodes.PROTOCOL_ERROR)]
    [answer] = [e for e in events if isinstance(e, h2.events.ResponseReceived)]
    assert answer.stream_id == 3 and (b":status", b"200") in answer.headers
    body = b"".join(bytes(e.data) for e in events if isinstance(e, h2.events.DataReceived))
    assert json.loads(body)["site"] == "a"
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in events)


@pytest.mark.usefixtures("caller_engine")
async def test_h2c_request_over_the_header_limit_gets_431_alone() -> None:
    """A header list over ``h2_max_header_list_bytes`` that decoded whole is refused on its
    stream with 431; the caller's next request on the same connection (encoded against the
    HPACK table the oversize block filled) is answered (h2 alone ended the connection)."""
    caller = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding=None)
    )
    get = [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"api.default.isthmus"),
        (b":path", b"/ok"),
    ]
    big = get + [(b"x-h%d" % i, b"v" * 100) for i in range(700)]  # ~96 KB decoded
    async with gateway() as (port, _):
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        async with tcp:
            caller.initiate_connection()
            caller.send_headers(1, big, end_stream=True)
            caller.send_headers(3, [*get, (b"x-h699", b"v" * 100)], end_stream=True)
            await tcp.send_all(caller.data_to_send())
            events: list[h2.events.Event] = []
            with trio.fail_after(5):
                while {e.stream_id for e in events if isinstance(e, h2.events.StreamEnded)} != {
                    1,
                    3,
                }:
                    data = await tcp.receive_some(65536)
                    assert data, "the gateway closed the caller's connection"
                    events += caller.receive_data(data)
                    await tcp.send_all(caller.data_to_send())
    status = {
        e.stream_id: dict(e.headers)[b":status"]
        for e in events
        if isinstance(e, h2.events.ResponseReceived)
    }
    assert status == {1: b"431", 3: b"200"}
    body = b"".join(
        bytes(e.data) for e in events if isinstance(e, h2.events.DataReceived) and e.stream_id == 3
    )
    doc = json.loads(body)
    assert doc["site"] == "a" and header(doc, "x-h699") == ["v" * 100]
    assert not any(isinstance(e, h2.events.ConnectionTerminated) for e in events)


async def read_response(stream: trio.SocketStream) -> bytes:
    """One complete Content-Length response from a kept-alive connection."""
    data = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in data:
            data += await stream.receive_some(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        while len(body) < length:
            body += await stream.receive_some(65536)
    return data


async def test_connection_cap_refuses_excess_at_once_and_keeps_existing() -> None:
    # Header and idle timeouts far beyond the guard below: an excess connection that ends
    # within the guard was refused by the cap, not queued and then timed out.
    limits = replace(TEST_LIMITS, max_connections=2, header_timeout_s=600.0, idle_timeout_s=600.0)
    async with serving(http_echo_backend) as http_port:
        router = make_router({API: ("a",)}, cluster=StandInCluster(http={API: http_port}))
        async with http_listener(router, limits=limits) as port:
            request = b"GET / HTTP/1.1\r\nHost: api.default.isthmus\r\n\r\n"
            held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(2)]
            for stream in held:  # both are being served
                await stream.send_all(request)
                assert (await read_response(stream)).startswith(b"HTTP/1.1 200")
            answer = b""
            with trio.fail_after(10):
                try:
                    excess = await trio.open_tcp_stream("127.0.0.1", port)
                except OSError:  # the RST can already arrive during connect()
                    pass
                else:
                    try:
                        await excess.send_all(request)
                        answer = await excess.receive_some(65536)
                    except trio.BrokenResourceError:
                        pass
                    finally:
                        await excess.aclose()
            assert answer == b"", answer  # never served
            # The existing connection is unaffected.
            await held[0].send_all(request)
            assert (await read_response(held[0])).startswith(b"HTTP/1.1 200")
            for stream in held:
                await stream.aclose()


@pytest.mark.parametrize("route", ["local", "peer"])
async def test_streaming_20_mib_chunked_body_without_memory_growth(route: str) -> None:
    total = 20 * 1024 * 1024
    piece = b"z" * 65536
    host = b"api.default.isthmus" if route == "local" else b"web.default.isthmus"
    # The route timeout bounds a whole exchange.  The tests' usual 5 s is only ~4x what 20 MiB
    # under tracemalloc takes on an idle machine; this test is about memory, not time.
    async with gateway(replace(TEST_LIMITS, route_timeout_s=120.0)) as (port, _):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        tracemalloc.start()
        try:
            received = 0

            async def upload() -> None:
                await stream.send_all(
                    b"POST /stream HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n"
                    % host
                )
                for _ in range(total // len(piece)):
                    await stream.send_all(b"%x\r\n%s\r\n" % (len(piece), piece))
                await stream.send_all(b"0\r\n\r\n")

            async with trio.open_nursery() as nursery:
                nursery.start_soon(upload)
                with trio.fail_after(60):
                    buf = b""
                    while b"\r\n\r\n" not in buf:
                        buf += await stream.receive_some(65536)
                    head, _, rest = buf.partition(b"\r\n\r\n")
                    assert head.startswith(b"HTTP/1.1 200") and b"chunked" in head.lower()
                    received_raw = len(rest)
                    tail = rest[-16:]
                    while not tail.endswith(b"0\r\n\r\n"):
                        data = await stream.receive_some(65536)
                        assert data
                        received_raw += len(data)
                        tail = (tail + data)[-16:]
                    received = received_raw
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
            await stream.aclose()
    assert received > total  # the payload plus chunk framing came back
    print(f"peak traced memory {route}: {peak} bytes")
    assert peak < 8 * 1024 * 1024, f"peak traced memory {peak} bytes"


class CountingStream(trio.abc.HalfCloseableStream):
    """A memory stream half that counts writes (the h1 adapter's syscalls)."""

    def __init__(self, inner: trio.abc.HalfCloseableStream) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.writes.append(bytes(data))
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize(
    ("headers", "body", "trailers", "expect"),
    [
        ((), b"hello", (), b"content-length: 5\r\n\r\nhello"),
        (((b"content-length", b"5"),), b"hello", (), b"content-length: 5\r\n\r\nhello"),
        ((), b"", (), b"transfer-encoding: chunked\r\n\r\n0\r\n\r\n"),
        ((), b"hi", ((b"x-sum", b"1"),), b"2\r\nhi\r\n0\r\nx-sum: 1\r\n\r\n"),
    ],
)
async def test_whole_response_fast_path_is_one_write_and_same_wire(
    headers: tuple[tuple[bytes, bytes], ...],
    body: bytes,
    trailers: tuple[tuple[bytes, bytes], ...],
    expect: bytes,
) -> None:
    import trio.testing

    from gateway.http.exchange import Response
    from gateway.http.h1_adapter import H1ResponseWriter
    from gateway.http.h1_server import H1ServerConnection

    client, server = trio.testing.memory_stream_pair()
    counting = CountingStream(server)
    conn = H1ServerConnection(counting)
    await client.send_all(b"GET / HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n")
    assert await conn.next_request() is not None
    writer = H1ResponseWriter(conn)
    await writer.send_whole(Response(200, headers), body, trailers)
    assert writer.head_sent and conn.keep_alive
    wire = b"".join(counting.writes)
    assert wire.startswith(b"HTTP/1.1 200 ") and wire.lower().endswith(expect)
    if not trailers:
        assert len(counting.writes) == 1
