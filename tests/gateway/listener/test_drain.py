"""The drain of a real HTTP listener (the worker side of a graceful stop): the request in
flight finishes with ``connection: close``, an idle keep-alive connection closes at once,
new connections are refused, an HTTP/2 caller's open stream finishes and it gets GOAWAY,
and the grace bounds it all.  Real sockets, a real endpoint that holds its answer."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from foundation.errors import H2_REFUSED_STREAM
from gateway.listener.drain import Drain
from overlay.h2.connection import H2Connection
from overlay.h2.stream import StreamReset
from tests.gateway.listener.held_endpoint import (
    GET_FAST,
    GET_SLOW,
    H2_GET_SLOW,
    HeldEndpoint,
)
from tests.gateway.listener.listener_kit import http_listener
from tests.gateway.router.router_kit import (
    API,
    StandInCluster,
    make_router,
    serving,
)

HANG_GUARD_S = 30.0


@asynccontextmanager
async def draining_listener(drain: Drain) -> AsyncIterator[tuple[int, HeldEndpoint]]:
    endpoint = HeldEndpoint()
    async with serving(endpoint.handler) as endpoint_port:
        router = make_router({API: ("a",)}, cluster=StandInCluster(http={API: endpoint_port}))
        async with http_listener(router, drain=drain) as port:
            yield port, endpoint
            endpoint.release.set()


async def read_response(stream: trio.SocketStream) -> bytes:
    """One whole response with a Content-Length body (the endpoint's)."""
    data = b""
    while b"\r\n\r\n" not in data or not data.split(b"\r\n\r\n", 1)[1].startswith(b"done"):
        piece = await stream.receive_some(65536)
        assert piece, f"closed before a whole response: {data!r}"
        data += piece
    while not data.endswith((b"/slow", b"/fast")):
        data += await stream.receive_some(65536)
    return data


async def closed_by_peer(stream: trio.SocketStream) -> bool:
    try:
        return await stream.receive_some(65536) == b""
    except trio.BrokenResourceError:
        return True


async def test_a_drain_finishes_the_request_in_flight_and_refuses_new_callers() -> None:
    drain = Drain()
    with trio.fail_after(HANG_GUARD_S):
        async with draining_listener(drain) as (port, endpoint):
            busy = await trio.open_tcp_stream("127.0.0.1", port)
            await busy.send_all(GET_SLOW)
            await endpoint.arrived.wait()
            idle = await trio.open_tcp_stream("127.0.0.1", port)
            await idle.send_all(GET_FAST)
            assert b"200" in (await read_response(idle)).split(b"\r\n")[0]
            assert drain.open_connections == 2

            drain.begin()
            await trio.testing.wait_all_tasks_blocked()
            assert await closed_by_peer(idle)  # idle keep-alive: closed at once
            with trio.socket.socket() as sock, pytest.raises(ConnectionRefusedError):
                await sock.connect(("127.0.0.1", port))  # the listener is closed
            assert drain.open_connections == 1  # the request in flight holds the drain

            async with trio.open_nursery() as nursery:
                idle_after: list[bool] = []

                async def wait() -> None:
                    idle_after.append(await drain.wait_idle(HANG_GUARD_S))

                nursery.start_soon(wait)
                endpoint.release.set()
                answer = await read_response(busy)
                head = answer.split(b"\r\n\r\n")[0].lower()
                assert head.startswith(b"http/1.1 200") and b"connection: close" in head
                assert await closed_by_peer(busy)
            assert idle_after == [True] and drain.open_connections == 0
            await busy.aclose()
            await idle.aclose()


async def test_keep_alive_callers_are_served_as_usual_without_a_drain() -> None:
    drain = Drain()
    with trio.fail_after(HANG_GUARD_S):
        async with draining_listener(drain) as (port, _):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                for _ in range(3):
                    await stream.send_all(GET_FAST)
                    head = (await read_response(stream)).split(b"\r\n\r\n")[0].lower()
                    assert b"connection: close" not in head


async def test_the_grace_bounds_the_wait() -> None:
    drain = Drain()
    with trio.fail_after(HANG_GUARD_S):
        async with draining_listener(drain) as (port, endpoint):
            busy = await trio.open_tcp_stream("127.0.0.1", port)
            await busy.send_all(GET_SLOW)
            await endpoint.arrived.wait()
            assert not await drain.start_and_wait(0.2)  # still in flight: the grace is over
            assert drain.open_connections == 1
            await busy.aclose()


async def test_an_h2_caller_finishes_its_stream_then_gets_goaway() -> None:
    drain = Drain()
    with trio.fail_after(HANG_GUARD_S):
        async with draining_listener(drain) as (port, endpoint):
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            client = H2Connection(tcp, client_side=True, ping_interval=None)
            async with trio.open_nursery() as nursery:
                await nursery.start(client.serve)
                headers = H2_GET_SLOW
                stream = await client.open_stream(headers, end_stream=True)
                await endpoint.arrived.wait()
                drain.begin()
                await trio.testing.wait_all_tasks_blocked()
                fast = [*headers[:3], (b":path", b"/fast")]
                late = await client.open_stream(fast, end_stream=True)
                with pytest.raises(StreamReset) as refused:  # safe to send elsewhere
                    await late.response_headers()
                assert refused.value.error_code == H2_REFUSED_STREAM
                endpoint.release.set()
                response = dict(await stream.response_headers())
                body = b""
                while piece := await stream.receive_some():
                    body += piece
                assert response[b":status"] == b"200" and body == b"done /slow"
                reason = await client.wait_closed()  # then GOAWAY and the connection closes
                assert str(reason) == "peer sent GOAWAY 0x0"
                assert await drain.wait_idle(HANG_GUARD_S)
