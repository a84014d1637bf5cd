"""Route timeout to the response head; idle timeout and maximum duration after it.

The pure rule (:func:`exchange_deadline`) is checked as a table; the behaviour through the
HTTP/1.1 listener and the router with in-memory streams and ``autojump_clock``, so every
time below is virtual and exact.  Behind the router sits a scripted local cluster: each
test says what the "endpoint" does and when.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace

import pytest
import trio
import trio.testing

from discovery.model import ServiceName
from gateway.config.model import LimitsConfig
from gateway.http.exchange import Body, CallContext, Request, Response, ResponseWriter
from gateway.http.exchange_timer import exchange_deadline
from gateway.http.overlay_headers import decode_context
from gateway.listener.h1 import serve_h1_connection
from gateway.listener.h2 import serve_h2_connection
from overlay.h2.connection import H2Connection
from overlay.h2.stream import StreamReset
from tests.gateway.router.router_kit import API, make_router

ROUTE_S = 15.0
IDLE_S = 40.0
LIMITS = LimitsConfig(route_timeout_s=ROUTE_S, stream_idle_timeout_s=IDLE_S, idle_timeout_s=1e6)
GET = b"GET /x HTTP/1.1\r\nHost: api.default.isthmus\r\nConnection: close\r\n\r\n"

Script = Callable[[Body, ResponseWriter], Awaitable[None]]


# ---------------------------------------------------------------------------------------------
# The pure rule
# ---------------------------------------------------------------------------------------------


def _ctx(idle: float | None = 40.0, max_deadline: float = math.inf) -> CallContext:
    return CallContext("a", None, 115.0, idle_timeout=idle, max_deadline=max_deadline)


@pytest.mark.parametrize(
    ("ctx", "head_at", "last", "expected"),
    [
        (_ctx(), None, 0.0, 115.0),  # before the head: the route deadline
        (_ctx(max_deadline=110.0), None, 0.0, 110.0),  # ... unless the maximum comes first
        (_ctx(), 101.0, 101.0, 141.0),  # head out: idle from the last byte, not the route
        (_ctx(), 101.0, 200.0, 240.0),  # every byte moves it on, past the route deadline
        (_ctx(max_deadline=230.0), 101.0, 200.0, 230.0),  # the maximum still stands
        (_ctx(idle=None), 101.0, 200.0, math.inf),  # no idle bound, no maximum: none
    ],
)
def test_exchange_deadline(
    ctx: CallContext, head_at: float | None, last: float, expected: float
) -> None:
    assert exchange_deadline(ctx, head_at=head_at, last_activity=last) == expected


def test_a_peers_deadline_bounds_the_head_and_our_stream_limits_the_body() -> None:
    """At the destination, ``isthmus-deadline-ms`` is what is left of the route timeout (to
    the head); the stream limits after the head are the destination's own."""
    ctx = decode_context(
        [(b"isthmus-deadline-ms", b"2000")],
        peer_site="b",
        now=100.0,
        route_timeout=15.0,
        idle_timeout=40.0,
        max_duration=600.0,
    )
    assert ctx.deadline == 102.0
    assert (ctx.idle_timeout, ctx.max_deadline) == (40.0, 700.0)
    # The body may outlive the carried deadline by far, as long as bytes move.
    assert exchange_deadline(ctx, head_at=101.0, last_activity=150.0) == 190.0


# ---------------------------------------------------------------------------------------------
# Through the HTTP/1.1 listener and the router
# ---------------------------------------------------------------------------------------------


class ScriptedCluster:
    """The local cluster stand-in: runs ``script`` for every request."""

    def __init__(self, script: Script) -> None:
        self.script = script

    def has_endpoints(self, service: ServiceName) -> bool:
        return True

    async def forward(
        self,
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        *,
        service: ServiceName,
    ) -> None:
        await self.script(body, writer)

    async def open_l4(self, ctx: CallContext, *, service: ServiceName) -> trio.SocketStream:
        raise AssertionError("not used")


@dataclass
class Seen:
    """What the caller saw: (virtual seconds since the request, bytes) pieces, and when the
    gateway closed the connection."""

    got: list[tuple[float, bytes]]
    closed_at: float

    @property
    def data(self) -> bytes:
        return b"".join(d for _, d in self.got)


async def _exchange(
    script: Script, request: bytes = GET, *, limits: LimitsConfig = LIMITS, upload: bytes = b""
) -> Seen:
    """Serve one HTTP/1.1 connection on a memory stream and read until the gateway closes.
    ``upload``: body bytes the caller sends, one chunk of one byte every ``IDLE_S / 2``."""
    client, server = trio.testing.memory_stream_pair()
    router = make_router(
        {API: ("a",)},
        cluster=ScriptedCluster(script),  # type: ignore[arg-type]
        route_timeout=limits.route_timeout_s,
    )
    got: list[tuple[float, bytes]] = []
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: serve_h1_connection(server, router, limits=limits, local_site="a")
        )
        await client.send_all(request)

        async def trickle() -> None:
            for byte in upload:
                await trio.sleep(IDLE_S / 2)
                await client.send_all(b"1\r\n%c\r\n" % byte)
            await client.send_all(b"0\r\n\r\n")

        if upload:
            nursery.start_soon(trickle)
        with trio.fail_after(1e5):
            for _ in range(10_000):
                try:
                    data = await client.receive_some(65536)
                except trio.BrokenResourceError:
                    break
                if not data:
                    break
                got.append((trio.current_time() - start, data))
        closed_at = trio.current_time() - start
        nursery.cancel_scope.cancel()
    return Seen(got, closed_at)


async def test_slow_head_is_504_at_the_route_timeout(autojump_clock: trio.abc.Clock) -> None:
    async def never_answers(body: Body, writer: ResponseWriter) -> None:
        await trio.sleep_forever()

    seen = await _exchange(never_answers)
    assert seen.data.startswith(b"HTTP/1.1 504 ")
    assert seen.got[0][0] == pytest.approx(ROUTE_S)


async def test_idle_stream_is_cut_at_the_idle_timeout(autojump_clock: trio.abc.Clock) -> None:
    """Head and a first piece at once, then silence: the response is cut ``IDLE_S`` after
    the last byte moved (not at the route timeout), and never ends as if complete."""

    async def stalls(body: Body, writer: ResponseWriter) -> None:
        await writer.send_head(Response(200, ()))
        await trio.sleep(5.0)
        await writer.send_data(b"first")
        await trio.sleep_forever()

    seen = await _exchange(stalls)
    assert seen.data.startswith(b"HTTP/1.1 200 ") and b"first" in seen.data
    assert not seen.data.endswith(b"0\r\n\r\n")  # the chunked body never ended
    assert seen.got[-1][0] == pytest.approx(5.0)
    assert seen.closed_at == pytest.approx(5.0 + IDLE_S)


async def test_a_stream_longer_than_the_route_timeout_completes(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A steady stream (server-sent events, a long download) runs four route timeouts."""

    async def events(body: Body, writer: ResponseWriter) -> None:
        await writer.send_head(Response(200, ((b"content-type", b"text/event-stream"),)))
        for i in range(int(4 * ROUTE_S / 5)):
            await trio.sleep(5.0)
            await writer.send_data(b"data: %d\n\n" % i)
        await writer.send_end()

    seen = await _exchange(events)
    assert seen.data.startswith(b"HTTP/1.1 200 ")
    assert seen.data.endswith(b"0\r\n\r\n")  # complete
    assert b"data: 11\n\n" in seen.data
    assert seen.got[-1][0] == pytest.approx(4 * ROUTE_S)


async def test_request_body_bytes_keep_the_exchange_alive(autojump_clock: trio.abc.Clock) -> None:
    """After the head, bytes from the caller count as much as bytes to it: an upload that
    trickles one byte every half idle timeout is not cut."""

    async def echo_after_head(body: Body, writer: ResponseWriter) -> None:
        await writer.send_head(Response(200, ()))
        taken = b""
        while piece := await body.receive_some():
            taken += piece
        await writer.send_data(taken)
        await writer.send_end()

    request = (
        b"POST /up HTTP/1.1\r\nHost: api.default.isthmus\r\nTransfer-Encoding: chunked\r\n"
        b"Connection: close\r\n\r\n"
    )
    seen = await _exchange(echo_after_head, request, upload=b"abcdef")
    assert b"abcdef" in seen.data and seen.data.endswith(b"0\r\n\r\n")
    assert seen.got[-1][0] == pytest.approx(6 * IDLE_S / 2)


async def test_max_stream_duration_cuts_a_live_stream(autojump_clock: trio.abc.Clock) -> None:
    async def endless(body: Body, writer: ResponseWriter) -> None:
        await writer.send_head(Response(200, ()))
        for _ in range(1000):
            await trio.sleep(1.0)
            await writer.send_data(b".")

    seen = await _exchange(endless, limits=replace(LIMITS, max_stream_duration_s=100.0))
    assert seen.data.startswith(b"HTTP/1.1 200 ") and not seen.data.endswith(b"0\r\n\r\n")
    assert seen.got[-1][0] == pytest.approx(99.0)  # the last piece before the maximum
    assert seen.closed_at == pytest.approx(100.0)


async def test_idle_h2_stream_is_reset_at_the_idle_timeout(autojump_clock: trio.abc.Clock) -> None:
    """The same over an h2c connection: the response stream is reset ``IDLE_S`` after its
    last byte, and the caller's connection stays up for its other streams."""

    async def stalls(body: Body, writer: ResponseWriter) -> None:
        await writer.send_head(Response(200, ()))
        await trio.sleep(5.0)
        await writer.send_data(b"first")
        await trio.sleep_forever()

    client_end, server_end = trio.testing.memory_stream_pair()
    router = make_router(
        {API: ("a",)},
        cluster=ScriptedCluster(stalls),  # type: ignore[arg-type]
        route_timeout=ROUTE_S,
    )
    client = H2Connection(client_end, client_side=True, ping_interval=None)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: serve_h2_connection(server_end, router, limits=LIMITS, local_site="a")
        )
        await nursery.start(client.serve)
        start = trio.current_time()
        stream = await client.open_stream(
            [
                (b":method", b"GET"),
                (b":scheme", b"http"),
                (b":authority", b"api.default.isthmus"),
                (b":path", b"/"),
            ],
            end_stream=True,
        )
        assert dict(await stream.response_headers())[b":status"] == b"200"
        assert await stream.receive_some() == b"first"
        assert trio.current_time() - start == pytest.approx(5.0)
        with pytest.raises(StreamReset):
            await stream.receive_some()
        assert trio.current_time() - start == pytest.approx(5.0 + IDLE_S)
        assert client.statistics().open_streams == 0 and client.close_reason is None
        await client.aclose()
        nursery.cancel_scope.cancel()
