"""Helpers for inbound tests: a peer link into a real east-west handler and endpoints."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import trio

from discovery.model import Endpoint, ServiceName
from foundation.spiffe_id import SpiffeId
from gateway.cluster.local import LocalCluster
from gateway.config.model import PolicyConfig
from gateway.demo.services import serve_tcp_echo
from gateway.inbound.east_west import EastWestHandler
from gateway.upstream.pool import UpstreamPool
from overlay.federation.config import ExportConfig
from overlay.h2.connection import H2Connection
from tests.gateway.upstream.upstream_kit import serve_h2_echo, serve_stream_echo, watch_of

PEER = "peer-site"


CALLER = "spiffe://peer.example/ns/default/sa/web"


def ep(name: str, port: int, protocol: str = "http1", **kw: object) -> Endpoint:
    return Endpoint(ServiceName(name), "127.0.0.1", port, protocol=protocol, **kw)  # type: ignore[arg-type]


EXPORTS = (
    ExportConfig(service="api"),
    ExportConfig(service="grpc"),
    ExportConfig(service="db"),
    ExportConfig(service="reset"),
    ExportConfig(service="sink"),
    ExportConfig(service="locked"),
    ExportConfig(service="down"),
    ExportConfig(service="private", peers=("someone-else",)),
)


POLICIES = (
    PolicyConfig(service="api", allow_sites=(PEER,)),
    PolicyConfig(service="grpc", allow_ids=(SpiffeId.parse(CALLER),)),
    PolicyConfig(service="db", allow_sites=("*",)),
    PolicyConfig(service="reset", allow_sites=("*",)),
    PolicyConfig(service="sink", allow_sites=("*",)),
    PolicyConfig(service="down", allow_sites=("*",)),
    PolicyConfig(service="private", allow_sites=("*",)),
)


@dataclass
class Site:
    client: H2Connection
    echo: dict[str, int]
    sink: list[str]


async def _resetting_endpoint(stream: trio.SocketStream) -> None:
    """Reads a little, then aborts the connection with RST."""
    await stream.receive_some(10)
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def _sink_endpoint(seen: list[str], stream: trio.SocketStream) -> None:
    """Reads until the connection ends and records how: ``eof`` or ``reset``."""
    try:
        while await stream.receive_some(65536):
            pass
        seen.append("eof")
    except trio.BrokenResourceError:
        seen.append("reset")
    finally:
        await stream.aclose()


@asynccontextmanager
async def site() -> AsyncIterator[Site]:
    echo: dict[str, int] = {}
    sink: list[str] = []
    h2_stats: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        api = await nursery.start(serve_stream_echo, echo)
        grpc = await nursery.start(serve_h2_echo, h2_stats)
        db = await nursery.start(serve_tcp_echo, "127.0.0.1", 0, "here")
        resetters = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, _resetting_endpoint, resetters)
        sinks = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, partial(_sink_endpoint, sink), sinks)
        catalog = watch_of(
            ep("api", api),
            ep("grpc", grpc, "http2"),
            ep("db", db, "tcp"),
            ep("reset", resetters[0].socket.getsockname()[1], "tcp"),
            ep("sink", sinks[0].socket.getsockname()[1], "tcp"),
            ep("locked", api),
            ep("private", api),
            ep("down", api, healthy=False),
        )
        pool = UpstreamPool()
        await nursery.start(pool.serve)
        cluster = LocalCluster(local_site="here", catalog=catalog, pool=pool)
        handler = EastWestHandler(
            local_site="here",
            mesh_domain="isthmus",
            cluster=cluster,
            export_rules=EXPORTS,
            policies=POLICIES,
        )
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        a = await trio.open_tcp_stream("127.0.0.1", port)
        b = await listeners[0].accept()
        await listeners[0].aclose()
        client = H2Connection(a, client_side=True, ping_interval=None)
        server = H2Connection(
            b, client_side=False, handler=lambda s: handler(PEER, s), ping_interval=None
        )
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        yield Site(client, echo, sink)
        assert server.close_reason is None, "a stream failure must never take the link down"
        nursery.cancel_scope.cancel()
