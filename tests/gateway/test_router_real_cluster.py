"""The origin half with the REAL LocalCluster (catalog, pool, round robin) behind the router.

A caller's HTTP/1.1 request enters the HTTP listener, the router sends it to the local cluster
(the demo's HTTP echo endpoint); when the local endpoint cannot be reached the real
``EndpointConnectFailed`` / ``NoHealthyEndpoint`` move the request to a peer over a real
HTTP/2 link.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from gateway.cluster.local import LocalCluster
from gateway.demo.services import serve_http_echo, serve_tcp_echo
from gateway.upstream.pool import UpstreamPool
from tests.gateway.test_listener_http import http_listener, raw_exchange
from tests.gateway.test_router_kit import API, make_router, peer, peer_echo
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
