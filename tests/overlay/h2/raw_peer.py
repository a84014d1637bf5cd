"""A real H2Connection server on loopback TCP and a raw h2 client that behaves badly on purpose.

Not a test module: the kit of :mod:`tests.overlay.h2.test_h2_abuse` and
:mod:`tests.overlay.h2.test_h2_malformed`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio

from overlay.h2.connection import H2Connection
from overlay.h2.limits import H2Limits
from overlay.h2.stream import H2Stream, PeerMisbehaved

REQ = [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "a.b.isthmus")]


async def answer(stream: H2Stream) -> None:
    await stream.send_headers([(":status", "200")])
    await stream.send_all(b"fine")
    await stream.send_eof()


@dataclass
class Server:
    port: int
    conns: list[H2Connection] = field(default_factory=list)


@asynccontextmanager
async def h2_server(
    handler: Callable[[H2Stream], Awaitable[None]] = answer, limits: H2Limits | None = None
) -> AsyncIterator[Server]:
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    server = Server(listener.socket.getsockname()[1])

    async def accept_loop(nursery: trio.Nursery) -> None:
        while True:
            sock = await listener.accept()
            conn = H2Connection(
                sock, client_side=False, handler=handler, limits=limits, ping_interval=None
            )
            server.conns.append(conn)
            nursery.start_soon(conn.serve)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(accept_loop, nursery)
        yield server
        nursery.cancel_scope.cancel()
    await listener.aclose()


class RawClient:
    """A bare h2 client over TCP that does exactly what the test tells it, nothing more."""

    def __init__(self, sock: trio.SocketStream) -> None:
        self.sock = sock
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.h2.initiate_connection()

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def flush(self) -> None:
        if data := self.h2.data_to_send():
            await self.sock.send_all(data)

    async def read_events(self, until: type, seconds: float = 5.0) -> list[h2.events.Event]:
        """Read until an event of type ``until`` or EOF; return every event seen."""
        seen: list[h2.events.Event] = []
        with trio.fail_after(seconds):
            while True:
                try:
                    data = await self.sock.receive_some(65536)
                except trio.BrokenResourceError:
                    return seen
                if not data:
                    return seen
                try:
                    events = self.h2.receive_data(data)
                except h2.exceptions.ProtocolError:
                    return seen
                seen.extend(events)
                await self.flush()
                if any(isinstance(e, until) for e in events):
                    return seen


def goaway_code(events: list[h2.events.Event]) -> int | None:
    for e in events:
        if isinstance(e, h2.events.ConnectionTerminated):
            return int(e.error_code or 0)
    return None


async def good_request(port: int) -> bytes:
    """A well-behaved client on its own connection: must keep working during the abuse."""
    sock = await trio.open_tcp_stream("127.0.0.1", port)
    client = H2Connection(sock, client_side=True, ping_interval=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        stream = await client.open_stream(REQ, end_stream=True)
        await stream.response_headers()
        body = b""
        while data := await stream.receive_some():
            body += data
        await client.aclose()
    return body


async def wait_closed(conn: H2Connection, seconds: float = 5.0) -> PeerMisbehaved:
    with trio.fail_after(seconds):
        reason = await conn.wait_closed()
    assert isinstance(reason, PeerMisbehaved), reason
    return reason
