"""The origin half with the REAL LocalCluster (catalog, pool, round robin) behind the router.

A caller's HTTP/1.1 request enters the HTTP listener, the router sends it to the local cluster
(the demo's HTTP echo endpoint); when the local endpoint cannot be reached the real
``EndpointConnectFailed`` / ``NoHealthyEndpoint`` move the request to a peer over a real
HTTP/2 link.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from foundation.errors import IsthmusError
from gateway.cluster.local import LocalCluster
from gateway.config.model import PolicyConfig
from gateway.demo.services import serve_http_echo, serve_tcp_echo
from gateway.inbound.east_west import EastWestHandler
from gateway.upstream.pool import UpstreamPool
from overlay.federation.config import ExportConfig
from tests.gateway.listener.listener_kit import h2c_request, http_listener, raw_exchange
from tests.gateway.router.router_kit import API, http_echo_backend, make_router, peer, peer_echo
from tests.gateway.upstream.upstream_kit import endpoint, refused_port, watch_of


@asynccontextmanager
async def real_cluster(*ports: int, protocol: str = "http1") -> AsyncIterator[LocalCluster]:
    async with trio.open_nursery() as nursery:
        pool = UpstreamPool()
        await nursery.start(pool.serve)
        eps = [endpoint(p, protocol) for p in ports]  # type: ignore[arg-type]
        yield LocalCluster(local_site="a", catalog=watch_of(*eps), pool=pool)
        nursery.cancel_scope.cancel()


REQUEST = b"GET /who HTTP/1.1\r\nHost: api.default.isthmus\r\nConnection: close\r\n\r\n"


async def test_http_caller_reaches_a_real_local_endpoint() -> None:
    async with trio.open_nursery() as servers:
        port = await servers.start(serve_http_echo, "127.0.0.1", 0, "a")
        async with real_cluster(port) as cluster:
            router = make_router({API: ("a", "b")}, cluster=cluster)  # type: ignore[arg-type]
            async with http_listener(router) as gw:
                status, _, body = await raw_exchange(gw, REQUEST)
        servers.cancel_scope.cancel()
    assert status == 200 and json.loads(body)["site"] == "a"


async def test_refused_local_endpoint_fails_over_to_the_peer() -> None:
    dead = await refused_port()
    async with real_cluster(dead) as cluster, peer(peer_echo("b")) as link:
        router = make_router({API: ("a", "b")}, cluster=cluster, links={"b": link})  # type: ignore[arg-type]
        async with http_listener(router) as gw:
            status, _, body = await raw_exchange(gw, REQUEST)
    assert status == 200 and json.loads(body)["site"] == "b"


async def test_no_local_endpoint_fails_over_to_the_peer() -> None:
    async with real_cluster() as cluster, peer(peer_echo("b")) as link:
        router = make_router({API: ("a", "b")}, cluster=cluster, links={"b": link})  # type: ignore[arg-type]
        async with http_listener(router) as gw:
            status, _, body = await raw_exchange(gw, REQUEST)
    assert status == 200 and json.loads(body)["site"] == "b"


async def test_connect_to_a_real_local_tcp_endpoint() -> None:
    async with trio.open_nursery() as servers:
        port = await servers.start(serve_tcp_echo, "127.0.0.1", 0, "a")
        async with real_cluster(port, protocol="tcp") as cluster:
            router = make_router({API: ("a",)}, cluster=cluster)  # type: ignore[arg-type]
            async with http_listener(router) as gw:
                stream = await trio.open_tcp_stream("127.0.0.1", gw)
                async with stream:
                    await stream.send_all(
                        b"CONNECT api.default.isthmus:7 HTTP/1.1\r\n"
                        b"Host: api.default.isthmus:7\r\n\r\nping"
                    )
                    await stream.send_eof()
                    data = b""
                    with trio.fail_after(5):
                        while piece := await stream.receive_some(65536):
                            data += piece
        servers.cancel_scope.cancel()
    head, _, tunnel = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and tunnel.endswith(b"ping")


class _Recording(trio.abc.Stream):
    """A socket stream that keeps a copy of every byte it receives."""

    def __init__(self, inner: trio.SocketStream, seen: list[bytes]) -> None:
        self.inner = inner
        self.seen = seen

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        self.seen.append(data)
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize(
    "size_line",
    [b'5;a="', b'5;a="x\r\n"', b"5;a=", b"5;"],
    ids=["unterminated-quote", "quote-spanning-crlf", "no-value", "no-name"],
)
async def test_chunk_extension_smuggling_never_reaches_the_endpoint(size_line: bytes) -> None:
    """RFC 9112 section 7.1.1: a chunk line whose extension breaks the grammar (``5;a="``,
    an unterminated quoted-string) is answered 400.  Accepting it made the gateway take the
    body as ending at the first ``0`` line and send the bytes after it to the endpoint as a
    second request, where a grammar-following parser reads them as part of the first body."""
    smuggled = b"GET /smuggled HTTP/1.1\r\nHost: api.default.isthmus\r\nConnection: close\r\n\r\n"
    request = (
        b"POST /first HTTP/1.1\r\nHost: api.default.isthmus\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + size_line + b"\r\nhello\r\n0\r\n\r\n" + smuggled
    )
    seen: list[bytes] = []  # every byte the endpoint received, on any connection

    async def recording_echo(stream: trio.SocketStream) -> None:
        with contextlib.suppress(IsthmusError):  # the gateway may abort the first body
            await http_echo_backend(_Recording(stream, seen))  # type: ignore[arg-type]

    async with trio.open_nursery() as servers:
        serve = partial(trio.serve_tcp, recording_echo, 0, host="127.0.0.1")
        [listener] = await servers.start(serve)
        async with real_cluster(listener.socket.getsockname()[1]) as cluster:
            router = make_router({API: ("a",)}, cluster=cluster)  # type: ignore[arg-type]
            async with http_listener(router) as gw:
                stream = await trio.open_tcp_stream("127.0.0.1", gw)
                async with stream:
                    await stream.send_all(request)
                    data = b""
                    with trio.fail_after(5):
                        while piece := await stream.receive_some(65536):
                            data += piece
        servers.cancel_scope.cancel()
    assert data.startswith(b"HTTP/1.1 400 ")
    assert data.count(b"HTTP/1.1 ") == 1  # one answer, and it is the refusal
    assert b"/smuggled" not in b"".join(seen)


def _reason_endpoint(
    status_line: bytes, framing: str
) -> Callable[[trio.SocketStream], Awaitable[None]]:
    """An HTTP/1.1 endpoint that answers every request with ``status_line`` and "ok"."""
    if framing == "length":  # small and whole: the gateway's one-write fast path
        rest = b"\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    else:  # chunked: the head goes out before the body
        rest = b"\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n2\r\nok\r\n0\r\n\r\n"

    async def handle(stream: trio.SocketStream) -> None:
        data = b""
        with trio.fail_after(5):
            while b"\r\n\r\n" not in data and len(data) < 65536:
                data += await stream.receive_some(65536)
            await stream.send_all(status_line + rest)
        await stream.aclose()

    return handle


async def _status_line(gw: int) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", gw)
    async with stream:
        await stream.send_all(REQUEST)
        data = b""
        with trio.fail_after(5):
            while piece := await stream.receive_some(65536):
                data += piece
    return data.partition(b"\r\n")[0]


REASONS = [
    (b"HTTP/1.1 299 Custom Reason", b"HTTP/1.1 299 Custom Reason"),
    (b"HTTP/1.1 200 Fine Thanks", b"HTTP/1.1 200 Fine Thanks"),
    (b"HTTP/1.1 404 Not Found", b"HTTP/1.1 404 Not Found"),
    (b"HTTP/1.1 200 ", b"HTTP/1.1 200 OK"),  # none sent: the standard one
]


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize(("sent", "seen"), REASONS)
async def test_an_endpoints_reason_phrase_reaches_an_http11_caller(
    sent: bytes, seen: bytes, framing: str
) -> None:
    async with trio.open_nursery() as servers:
        serve = partial(trio.serve_tcp, _reason_endpoint(sent, framing), 0, host="127.0.0.1")
        [listener] = await servers.start(serve)
        async with real_cluster(listener.socket.getsockname()[1]) as cluster:
            router = make_router({API: ("a",)}, cluster=cluster)  # type: ignore[arg-type]
            async with http_listener(router) as gw:
                assert await _status_line(gw) == seen
        servers.cancel_scope.cancel()


@pytest.mark.parametrize("framing", ["length", "chunked"])
@pytest.mark.parametrize(
    ("sent", "seen"),
    [
        *REASONS,
        # HTTP/2 field values have no surrounding whitespace: trimmed, not a malformed block.
        (b"HTTP/1.1 299 Custom Reason \t", b"HTTP/1.1 299 Custom Reason"),
        (b"HTTP/1.1 200 OK ", b"HTTP/1.1 200 OK"),
    ],
)
async def test_an_endpoints_reason_phrase_crosses_a_link(
    sent: bytes, seen: bytes, framing: str
) -> None:
    """HTTP/2 has no reason phrase: the destination gateway carries a non-standard one to the
    origin in the internal ``isthmus-reason`` field, which no caller or endpoint ever sees."""
    async with trio.open_nursery() as servers:
        serve = partial(trio.serve_tcp, _reason_endpoint(sent, framing), 0, host="127.0.0.1")
        [listener] = await servers.start(serve)
        async with real_cluster(listener.socket.getsockname()[1]) as destination:
            ingress = EastWestHandler(
                local_site="b",
                mesh_domain="isthmus",
                cluster=destination,
                export_rules=(ExportConfig(service="api"),),
                policies=(PolicyConfig(service="api", allow_sites=("a",)),),
            )
            async with peer(partial(ingress, "a")) as link:
                router = make_router({API: ("b",)}, links={"b": link})
                async with http_listener(router) as gw:
                    assert await _status_line(gw) == seen
                    # An HTTP/2 caller gets the status and never the internal field.
                    response, body = await h2c_request(
                        gw,
                        [
                            (b":method", b"GET"),
                            (b":scheme", b"http"),
                            (b":authority", b"api.default.isthmus"),
                            (b":path", b"/who"),
                        ],
                    )
                    assert response[b":status"] == sent.split(b" ")[1] and body == b"ok"
                    assert b"isthmus-reason" not in response
        servers.cancel_scope.cancel()
