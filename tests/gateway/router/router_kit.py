"""Shared real parts for the router, tunnel and listener tests (this module holds no tests).

Everything here moves real bytes on 127.0.0.1:

* ``http_echo_backend``: an HTTP/1.1 endpoint that answers with JSON describing the request
  (or, under ``/stream``, echoes the body back as it arrives);
* ``tcp_echo_backend``: a TCP echo endpoint that half-closes after the caller's EOF;
* ``StandInCluster``: a small but real local cluster (TCP + HTTP/1.1 client) with the
  contract of ``gateway.cluster.local.LocalCluster``;
* ``peer``: a REAL HTTP/2 link (two ``H2Connection`` over a TCP socket pair) whose server side
  plays a peer gateway that serves an echo, including ``CONNECT`` tunnels.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import immutables
import trio

from discovery.model import ServiceName
from discovery.watch import Watch
from foundation.errors import H2_REFUSED_STREAM
from gateway.cluster.local import NoHealthyEndpoint
from gateway.config.model import LimitsConfig
from gateway.http.exchange import Body, CallContext, Request, Response, ResponseWriter
from gateway.http.h1_client import H1ClientConnection
from gateway.http.h1_server import H1ServerConnection
from gateway.http.message import Headers, ResponseHead
from gateway.http.transcode import h1_response_to_h2, h2_request_to_h1
from gateway.router.route import Router
from gateway.upstream.pool import EndpointConnectFailed
from overlay.h2.connection import H2Connection
from overlay.h2.limits import H2Limits
from overlay.h2.stream import H2Stream
from overlay.peering.route_table import RouteView

API = ServiceName("api", "default")
DB = ServiceName("db", "default")
LOCAL = "a"


# ---------------------------------------------------------------------------------------------
# Backends
# ---------------------------------------------------------------------------------------------


async def read_body(body: Callable[[], Awaitable[bytes]], limit: int = 1 << 26) -> bytes:
    out = bytearray()
    while piece := await body():
        out += piece
        assert len(out) <= limit
    return bytes(out)


def describe(site: str, method: bytes, path: bytes, headers: Headers, body: bytes) -> bytes:
    return json.dumps(
        {
            "site": site,
            "method": method.decode(),
            "path": path.decode(),
            "headers": [[n.decode(), v.decode()] for n, v in headers],
            "body": body.decode("latin-1"),
        }
    ).encode()


async def http_echo_backend(stream: trio.SocketStream, *, site: str = LOCAL) -> None:
    conn = H1ServerConnection(stream)
    try:
        while (head := await conn.next_request()) is not None:
            if head.target.startswith(b"/stream"):
                await conn.send_response(ResponseHead(200, ((b"x-site", site.encode()),)))
                while piece := await conn.receive_body():
                    await conn.send_body(piece)
                await conn.end_response(conn.trailers)
            else:
                body = await read_body(conn.receive_body)
                out = describe(site, head.method, head.target, head.headers, body)
                await conn.send_response(
                    ResponseHead(200, ((b"content-type", b"application/json"),)),
                    content_length=len(out),
                    body=out,
                    end=True,
                )
            if not conn.keep_alive:
                break
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await conn.aclose()


async def tcp_echo_backend(stream: trio.SocketStream) -> None:
    try:
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
        await stream.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


@asynccontextmanager
async def serving(
    handler: Callable[[trio.SocketStream], Awaitable[None]],
) -> AsyncIterator[int]:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handler, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------------
# The local cluster stand-in
# ---------------------------------------------------------------------------------------------


@dataclass
class StandInCluster:
    """Routes a service to one local endpoint over real TCP (HTTP/1.1 or raw)."""

    http: dict[ServiceName, int] = field(default_factory=dict)
    tcp: dict[ServiceName, int] = field(default_factory=dict)
    calls: list[Request] = field(default_factory=list)
    bodies: list[Body] = field(default_factory=list)

    def has_endpoints(self, service: ServiceName) -> bool:
        return service in self.http or service in self.tcp

    async def _connect(self, port: int | None, service: ServiceName) -> trio.SocketStream:
        if port is None:
            raise NoHealthyEndpoint(f"{service}: no healthy endpoint")
        try:
            return await trio.open_tcp_stream("127.0.0.1", port)
        except OSError as exc:
            raise EndpointConnectFailed(f"connect: {exc}") from exc

    async def forward(
        self,
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        *,
        service: ServiceName,
        only: object = None,
    ) -> None:
        self.calls.append(request)
        self.bodies.append(body)
        tcp = await self._connect(self.http.get(service), service)
        client = H1ClientConnection(tcp)
        try:
            await client.send_request(h2_request_to_h1(request.h2_headers()))

            async def send() -> None:
                while piece := await body.receive_some(65536):
                    await client.send_body(piece)
                await client.end_request(body.trailers)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                head = await client.receive_response()
                regular = tuple(
                    (n, v) for n, v in h1_response_to_h2(head) if not n.startswith(b":")
                )
                await writer.send_head(Response(head.status, regular))
                while piece := await client.receive_body():
                    await writer.send_data(piece)
                await writer.send_end(client.trailers)
        finally:
            await client.aclose()

    async def open_l4(
        self, ctx: CallContext, *, service: ServiceName, only: object = None
    ) -> trio.SocketStream:
        return await self._connect(self.tcp.get(service), service)


# ---------------------------------------------------------------------------------------------
# A real HTTP/2 peer
# ---------------------------------------------------------------------------------------------

PeerHandler = Callable[[H2Stream], Awaitable[None]]


def peer_echo(site: str) -> PeerHandler:
    """A peer gateway that serves an echo: JSON for requests, streamed echo under /stream,
    byte echo for CONNECT."""

    async def handler(stream: H2Stream) -> None:
        fields = dict(stream.request_headers)
        method, path = fields[b":method"], fields.get(b":path", b"")
        if method == b"CONNECT":
            await stream.send_headers([(b":status", b"200")])
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
            await stream.send_eof()
            return
        if path.startswith(b"/stream"):
            await stream.send_headers([(b":status", b"200"), (b"x-site", site.encode())])
            while data := await stream.receive_some(65536):
                await stream.send_all(data)
            if stream.trailers:
                await stream.send_trailers(stream.trailers)
            else:
                await stream.send_eof()
            return
        body = await read_body(stream.receive_some)
        regular = tuple((n, v) for n, v in stream.request_headers if not n.startswith(b":"))
        authority = fields.get(b":authority", b"")
        out = describe(site, method, path, ((b":authority", authority), *regular), body)
        await stream.send_headers(
            [(b":status", b"200"), (b"content-length", str(len(out)).encode())]
        )
        await stream.send_all(out)
        if stream.trailers:
            await stream.send_trailers([(b"x-got-trailers", b"yes")])
        else:
            await stream.send_eof()

    return handler


async def refusing(stream: H2Stream) -> None:
    """A peer that does no work: REFUSED_STREAM (safe to retry elsewhere)."""
    stream.reset(H2_REFUSED_STREAM)


@asynccontextmanager
async def peer(
    handler: PeerHandler, *, limits: H2Limits | None = None
) -> AsyncIterator[H2Connection]:
    """The client side of a real HTTP/2 link over loopback TCP to a peer running ``handler``
    (with ``limits`` on the peer's server side, e.g. to advertise extended CONNECT)."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    a = await trio.open_tcp_stream("127.0.0.1", port)
    b = await listeners[0].accept()
    await listeners[0].aclose()
    client = H2Connection(a, client_side=True, ping_interval=None)
    server = H2Connection(b, client_side=False, handler=handler, limits=limits, ping_interval=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        yield client
        await client.aclose()
        await server.aclose()


# ---------------------------------------------------------------------------------------------
# Router and a collecting writer
# ---------------------------------------------------------------------------------------------


def route_view(routes: dict[ServiceName, tuple[str, ...]]) -> Watch[RouteView]:
    return Watch(RouteView(LOCAL, immutables.Map(routes)))


def make_router(
    routes: dict[ServiceName, tuple[str, ...]],
    *,
    cluster: StandInCluster | None = None,
    links: dict[str, H2Connection | None] | None = None,
    route_timeout: float = 5.0,
    known: Callable[[ServiceName], bool] | None = None,
    peer_sites: tuple[str, ...] | None = None,
) -> Router:
    links = links or {}
    return Router(
        local_site=LOCAL,
        mesh_domain="isthmus",
        routes=route_view(routes),
        outbound=lambda site: links.get(site),
        local=cluster or StandInCluster(),
        route_timeout=route_timeout,
        known=known,
        peer_sites=peer_sites,
    )


class Collect:
    """A ResponseWriter that keeps what it was given."""

    def __init__(self) -> None:
        self.response: Response | None = None
        self.body = bytearray()
        self.trailers: Headers = ()
        self.ended = False

    @property
    def head_sent(self) -> bool:
        return self.response is not None

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None:
        self.response = response
        self.ended = end_stream

    async def send_data(self, data: bytes) -> None:
        self.body += data

    async def send_end(self, trailers: Headers = ()) -> None:
        self.trailers = trailers
        self.ended = True

    def json(self) -> dict[str, object]:
        return json.loads(bytes(self.body))  # type: ignore[no-any-return]


class BytesBody:
    """A request body given up front, in pieces, with optional trailers."""

    def __init__(self, *pieces: bytes, trailers: Headers = ()) -> None:
        self.pieces = list(pieces)
        self.trailers = trailers

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return self.pieces.pop(0) if self.pieces else b""


def ctx(deadline_in: float = 10.0, caller_id: object = None) -> CallContext:
    return CallContext(LOCAL, caller_id, trio.current_time() + deadline_in)  # type: ignore[arg-type]


def get(authority: bytes, path: bytes = b"/", headers: Headers = ()) -> Request:
    return Request(b"GET", b"http", authority, path, headers)


TEST_LIMITS = LimitsConfig(route_timeout_s=5.0, header_timeout_s=2.0, idle_timeout_s=10.0)
