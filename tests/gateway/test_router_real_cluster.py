"""The origin half with the REAL LocalCluster (catalog, pool, round robin) behind the router.

A caller's HTTP/1.1 request enters the HTTP listener, the router sends it to the local cluster
(the demo's HTTP echo endpoint); when the local endpoint cannot be reached the real
``EndpointConnectFailed`` / ``NoHealthyEndpoint`` move the request to a peer over a real
HTTP/2 link.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from discovery.errors import IsthmusError
from gateway.cluster.local import LocalCluster
from gateway.demo.services import serve_http_echo, serve_tcp_echo
from gateway.upstream.pool import UpstreamPool
from tests.gateway.test_listener_http import http_listener, raw_exchange
from tests.gateway.test_router_kit import API, http_echo_backend, make_router, peer, peer_echo
from tests.gateway.test_upstream_servers import endpoint, refused_port, watch_of


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
