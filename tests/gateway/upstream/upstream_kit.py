"""Helpers for upstream tests: real endpoints on loopback and catalogs of them."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial

import trio

from discovery.catalog import apply
from discovery.events import Resynced
from discovery.merge import Policy
from discovery.model import Endpoint, Protocol, ServiceName
from discovery.snapshot import Catalog
from discovery.watch import Watch
from foundation.errors import H2_INTERNAL_ERROR
from gateway.http.exchange import Response
from gateway.http.h1_connection import H1Limits
from gateway.http.h1_server import H1ServerConnection
from gateway.http.message import Headers, ResponseHead
from overlay.h2.connection import H2Connection
from overlay.h2.stream import H2Stream

SVC = ServiceName("api", "default")


def endpoint(port: int, protocol: Protocol = "http1", **kw: object) -> Endpoint:
    return Endpoint(SVC, "127.0.0.1", port, protocol=protocol, **kw)  # type: ignore[arg-type]


def watch_of(*endpoints: Endpoint) -> Watch[Catalog]:
    return Watch(catalog_of(*endpoints))


class RecordingWriter:
    """A ResponseWriter that records the head and trailers and keeps (or only counts) data."""

    def __init__(self, *, keep: bool = True) -> None:
        self.response: Response | None = None
        self.ended_with_head = False
        self.body = bytearray()
        self.length = 0
        self.trailers: Headers | None = None
        self.keep = keep
        self._head_sent = False

    @property
    def head_sent(self) -> bool:
        return self._head_sent

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None:
        await trio.lowlevel.checkpoint()
        self._head_sent = True
        self.response = response
        if end_stream:
            self.ended_with_head = True
            self.trailers = ()

    async def send_data(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()
        self.length += len(data)
        if self.keep:
            self.body += data

    async def send_end(self, trailers: Headers = ()) -> None:
        await trio.lowlevel.checkpoint()
        self.trailers = tuple(trailers)

    @property
    def status(self) -> int:
        assert self.response is not None
        return self.response.status

    def header(self, name: bytes) -> bytes | None:
        assert self.response is not None
        return dict(self.response.headers).get(name)

    def json(self) -> dict[str, object]:
        doc = json.loads(bytes(self.body))
        assert isinstance(doc, dict)
        return doc


async def serve_stream_echo(
    stats: dict[str, int], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    stats.setdefault("connections", 0)
    stats.setdefault("requests", 0)
    await listen_loopback(partial(_stream_echo_connection, stats=stats), task_status)


async def serve_h2_echo(
    stats: dict[str, int], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    stats.setdefault("connections", 0)
    await listen_loopback(partial(_h2_connection, stats=stats), task_status)


async def refused_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port: int = sock.getsockname()[1]
    sock.close()
    return port


def catalog_of(*endpoints: Endpoint) -> Catalog:
    catalog, _ = apply(
        Catalog(), Resynced("static", tuple(endpoints), "1", 0.0), now=0.0, policy=Policy()
    )
    return catalog


async def listen_loopback(handler: object, task_status: trio.TaskStatus[int]) -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(port)


async def _stream_echo_connection(stream: trio.SocketStream, stats: dict[str, int]) -> None:
    """HTTP/1.1: answer 200 at once, echo the body back chunked *while* reading it, then
    send trailers with the length; report request headers in ``x-request-headers``."""
    stats["connections"] += 1
    conn = H1ServerConnection(stream, H1Limits())
    try:
        for _ in range(MAX_CONNECTIONS):
            head = await conn.next_request()
            if head is None:
                break
            stats["requests"] += 1
            names = json.dumps([[n.decode(), v.decode()] for n, v in head.headers]).encode()
            await conn.send_response(ResponseHead(200, ((b"x-request-headers", names),)))
            n = 0
            while piece := await conn.receive_body():
                n += len(piece)
                await conn.send_body(piece)
            await conn.end_response(((b"x-length", b"%d" % n),))
    except trio.BrokenResourceError:
        pass
    finally:
        await conn.aclose()


async def _h2_connection(stream: trio.SocketStream, stats: dict[str, int]) -> None:
    stats["connections"] += 1
    conn = H2Connection(stream, client_side=False, handler=h2_echo_handler, ping_interval=None)
    await conn.serve()


MAX_CONNECTIONS = 10_000


async def h2_echo_handler(stream: H2Stream) -> None:
    """HTTP/2: report request headers, echo the body, return trailers (request trailers plus
    ``x-length``).  ``:path /slow`` waits 3600 s before answering; ``/reset`` resets."""
    req = stream.request_headers
    path = dict(req).get(b":path")
    if path == b"/slow":
        await trio.sleep(3600)
    if path == b"/reset":
        stream.reset(H2_INTERNAL_ERROR)
        return
    names = json.dumps([[n.decode(), v.decode()] for n, v in req]).encode()
    await stream.send_headers([(b":status", b"200"), (b"x-request-headers", names)])
    n = 0
    while data := await stream.receive_some(64 * 1024):
        n += len(data)
        await stream.send_all(data)
    trailers = [*(stream.trailers or []), (b"x-length", b"%d" % n)]
    await stream.send_trailers(trailers)


class PatternBody:
    """A request body of ``size`` bytes produced lazily in ``chunk``-sized pieces."""

    def __init__(self, size: int, chunk: int = 64 * 1024, trailers: Headers = ()) -> None:
        self.remaining = size
        self.chunk = chunk
        self._trailers = trailers
        self.pulled = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        n = min(self.remaining, self.chunk, max_bytes or self.chunk)
        self.remaining -= n
        self.pulled += n
        return b"x" * n

    @property
    def trailers(self) -> Headers:
        return self._trailers


class BytesBody(PatternBody):
    def __init__(self, data: bytes, trailers: Headers = ()) -> None:
        super().__init__(len(data), trailers=trailers)
        self.data = data

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        out, self.data = self.data, b""
        return out


async def serve_stale(
    stats: dict[str, int], *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    for key in ("connections", "answered", "dropped"):
        stats.setdefault(key, 0)
    await listen_loopback(partial(_stale_connection, stats=stats), task_status)


def header_pairs(raw: bytes | None) -> Sequence[tuple[str, str]]:
    assert raw is not None
    return [(n, v) for n, v in json.loads(raw)]


async def _stale_connection(stream: trio.SocketStream, stats: dict[str, int]) -> None:
    """Serve the first request of a connection; on the next one close without answering
    (what a backend whose keep-alive timer fired just as the request arrived does)."""
    stats["connections"] += 1
    conn = H1ServerConnection(stream, H1Limits())
    try:
        head = await conn.next_request()
        if head is None:
            return
        stats["answered"] += 1
        while await conn.receive_body():
            pass
        body = b"fresh"
        await conn.send_response(ResponseHead(200, ()), content_length=5, body=body, end=True)
        if await conn.next_request() is not None:
            stats["dropped"] += 1
    except trio.BrokenResourceError:
        pass
    finally:
        await stream.aclose()
