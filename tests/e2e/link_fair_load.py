"""Pieces of the fair-sharing end-to-end tests: a west endpoint, attackers, a victim's load.

Kept apart from the tests so each test reads as attack, load, assertions.  Every loop is
bounded in count and time; traffic goes to loopback only.
"""

from __future__ import annotations

import contextlib
import math
import socket
from dataclasses import dataclass

import trio

from overlay.h2.connection import H2Connection

ENDPOINT_PORT = 18779
BIG = 8 * 1024 * 1024  # one response a non-reading caller leaves on the link
PIECE = bytes(range(256)) * 256  # 64 KiB
HOLD_S = 60.0  # the longest an endpoint keeps a slow request or idle tunnel open


class _Gauge:
    """Requests (and tunnels) the endpoint holds now: how many of an attack's streams
    crossed the link."""

    def __init__(self) -> None:
        self.value = 0
        self.changed = trio.Event()

    def add(self, n: int) -> None:
        self.value += n
        self.changed.set()
        self.changed = trio.Event()


ENDPOINT_OPEN = _Gauge()


async def endpoint(stream: trio.SocketStream) -> None:
    """HTTP/1.1 endpoint: takes the request's body, then ``/big`` is ``BIG`` bytes,
    ``/slow`` answers after ``HOLD_S``, anything else ``ok``.  A connection that sends no
    request (a CONNECT tunnel's) is held idle for ``HOLD_S``."""
    ENDPOINT_OPEN.add(1)
    try:
        head = b""
        with trio.move_on_after(HOLD_S):
            while b"\r\n\r\n" not in head and len(head) < 65536:
                data = await stream.receive_some(65536)
                if not data:
                    return
                head += data
        if b"\r\n\r\n" not in head:
            return
        path = head.split(b" ", 2)[1]
        await _read_body(stream, head)
        if path == b"/big":
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % BIG)
            for _ in range(BIG // len(PIECE)):
                await stream.send_all(PIECE)
        else:
            if path == b"/slow":
                await trio.sleep(HOLD_S)
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        ENDPOINT_OPEN.add(-1)
        await stream.aclose()


async def wait_endpoint_holds(count: int, *, within_s: float) -> None:
    """Wait until the endpoint holds ``count`` requests, for at most ``within_s`` seconds
    (then go on: without a fix some of them may never cross the link)."""
    with trio.move_on_after(within_s):
        while ENDPOINT_OPEN.value < count:
            await ENDPOINT_OPEN.changed.wait()


async def _read_body(stream: trio.SocketStream, head: bytes) -> None:
    """Take the request's declared body (as most servers do before answering), for at most
    ``HOLD_S``: a slow body keeps its request, and its stream on the link, open."""
    length = 0
    for line in head.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    got = len(head.split(b"\r\n\r\n", 1)[1])
    with trio.move_on_after(HOLD_S):
        while got < length:
            data = await stream.receive_some(65536)
            if not data:
                return
            got += len(data)


async def connect_from(host: str, port: int, source: str) -> trio.SocketStream:
    """A TCP connection from the loopback address ``source`` (one caller per address)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    await sock.bind((source, 0))
    await sock.connect((host, port))
    return trio.SocketStream(sock)


async def read_head(stream: trio.SocketStream) -> bytes:
    buf = b""
    while b"\r\n\r\n" not in buf and len(buf) < 65536:
        data = await stream.receive_some(65536)
        if not data:
            break
        buf += data
    return buf


@dataclass
class Outcome:
    statuses: list[int]
    latencies: list[float]

    @property
    def ok(self) -> int:
        return sum(s == 200 for s in self.statuses)

    def p99(self) -> float:
        ordered = sorted(self.latencies)
        return ordered[max(0, math.ceil(0.99 * len(ordered)) - 1)] if ordered else math.inf


async def victim_load(
    host: str, port: int, authority: bytes, source: str, *, total: int, concurrency: int
) -> Outcome:
    """``total`` GETs of ``/`` (one connection each), ``concurrency`` at a time; stops early
    once more than 1 % failed (the verdict is known; without a fix each failure is a 504
    after the route timeout)."""
    outcome = Outcome([], [])
    queue = iter(range(total))

    async def one() -> None:
        for _ in queue:
            if len(outcome.statuses) - outcome.ok > total // 100:
                return
            start = trio.current_time()
            status = 0
            try:
                stream = await connect_from(host, port, source)
                async with stream:
                    await stream.send_all(
                        b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % authority
                    )
                    head = await read_head(stream)
                    if head.startswith(b"HTTP/1.1 "):
                        status = int(head[9:12])
            except OSError:
                status = 0
            outcome.statuses.append(status)
            outcome.latencies.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(one)
    return outcome


async def idle_tunnel(
    host: str, port: int, authority: bytes, source: str, held: list[trio.SocketStream]
) -> tuple[int, bytes]:
    """Open an L4 tunnel with ``CONNECT`` and leave it idle (kept in ``held``); its status
    and, for a refusal, the answer (head and body, up to the gateway's close)."""
    stream = await connect_from(host, port, source)
    held.append(stream)
    await stream.send_all(b"CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (authority, authority))
    head = await read_head(stream)
    status = int(head[9:12]) if head.startswith(b"HTTP/1.1 ") else 0
    if status != 200:
        with trio.move_on_after(5):  # the error answer ends with the connection
            while len(head) < 65536 and (data := await stream.receive_some(65536)):
                head += data
    return status, head


async def hold_slow_body(host: str, port: int, authority: bytes, source: str) -> None:
    """Keep one slow request body open, for at most ``HOLD_S``: POST with a 1 MiB body, then
    one byte a second (so no idle timeout ends it); when the gateway ends the request (its
    route timeout: a 504), start the next one at once -- a sustained attack, as a real one is.
    """
    request = b"POST / HTTP/1.1\r\nHost: %s\r\ncontent-length: 1048576\r\n\r\nx" % authority
    with trio.move_on_after(HOLD_S):
        for _ in range(int(HOLD_S)):  # at most one request per second of the hold
            stream = await connect_from(host, port, source)
            async with stream:
                await stream.send_all(request)
                ended = False
                for _ in range(int(HOLD_S)):
                    with trio.move_on_after(1.0):
                        ended = not await stream.receive_some(65536) or True
                    if ended:
                        break
                    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                        await stream.send_all(b"x")


async def unread_response(
    host: str, port: int, authority: bytes, source: str, held: list[trio.SocketStream]
) -> None:
    """Ask for ``/big`` and never read a byte of the answer (kept in ``held``)."""
    stream = await connect_from(host, port, source)
    held.append(stream)
    await stream.send_all(b"GET /big HTTP/1.1\r\nHost: %s\r\n\r\n" % authority)


async def reset_flood(host: str, port: int, authority: str, *, resets: int) -> int:
    """One HTTP/2 caller connection: ``resets`` times, open ``GET /slow`` and reset it once
    the gateway had time to forward it.  Under the caller's own budget (200 per 10 s per
    connection) when ``resets`` is below it.  Returns how many resets were sent."""
    tcp = await trio.open_tcp_stream(host, port)
    conn = H2Connection(tcp, client_side=True, ping_interval=None)
    sent = 0
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.serve)
        request = [
            (":method", "GET"),
            (":scheme", "http"),
            (":authority", authority),
            (":path", "/slow"),
        ]
        for _ in range(resets):
            if conn.is_closing:
                break
            stream = await conn.open_stream(request, end_stream=True)
            await trio.sleep(0.02)  # long enough for the origin to open the link stream
            stream.reset()
            sent += 1
        await conn.aclose()
        nursery.cancel_scope.cancel()
    return sent
