"""A reload's stop of a caller listener drains it (:mod:`gateway.reload.scoped`): real
sockets, a real HTTP listener, a real endpoint that holds its answer.

* the stop returns as soon as the listening socket is closed -- a replacement binds the same
  port at once and serves -- while the request in flight on the old listener finishes with
  ``connection: close``;
* an HTTP/2 caller of the old listener finishes its open stream, a new one is refused
  (``REFUSED_STREAM``), then it gets GOAWAY;
* the grace bounds the old listener: what is still open is cut, and its task ends;
* shutdown's drain begins every listener's part and waits for the draining ones too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from ipaddress import IPv4Address
from typing import Any

import pytest
import trio
import trio.testing

from foundation.errors import H2_REFUSED_STREAM
from gateway.config.model import ListenerConfig
from gateway.listener.drain import Drain
from gateway.listener.http import serve_http_listener
from gateway.reload.scoped import ScopedTasks
from gateway.router.route import Router
from overlay.h2.connection import H2Connection
from overlay.h2.stream import StreamReset
from tests.gateway.listener.held_endpoint import GET_FAST, GET_SLOW, H2_GET_SLOW, HeldEndpoint
from tests.gateway.listener.test_drain import closed_by_peer, read_response
from tests.gateway.router.router_kit import API, TEST_LIMITS, StandInCluster, make_router, serving

HANG_GUARD_S = 30.0


class Listeners:
    """Caller listeners started as a reload starts them: keyed, each with its own part of
    one gateway-wide drain."""

    def __init__(self, nursery: trio.Nursery, router: Router) -> None:
        self.nursery, self.router = nursery, router
        self.whole = Drain()
        self.scoped = ScopedTasks()
        self.parts: dict[str, Drain] = {}

    async def start(self, key: str, port: int = 0) -> int:
        part = self.whole.part(key)
        self.parts[key] = part
        config = ListenerConfig(key, "http", IPv4Address("127.0.0.1"), port)
        serve = partial(
            serve_http_listener,
            config,
            self.router,
            identity=None,
            limits=TEST_LIMITS,
            local_site="a",
            drain=part,
        )

        async def run(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                await serve(task_status=task_status)
            finally:
                part.detach()

        bound: int = await self.scoped.start(self.nursery, key, run, drain=part)
        return bound


@asynccontextmanager
async def listeners() -> AsyncIterator[tuple[Listeners, HeldEndpoint]]:
    endpoint = HeldEndpoint()
    async with serving(endpoint.handler) as endpoint_port, trio.open_nursery() as nursery:
        router = make_router({API: ("a",)}, cluster=StandInCluster(http={API: endpoint_port}))
        yield Listeners(nursery, router), endpoint
        endpoint.release.set()
        nursery.cancel_scope.cancel()


async def refused(port: int) -> bool:
    with trio.socket.socket() as sock:
        try:
            await sock.connect(("127.0.0.1", port))
        except ConnectionRefusedError:
            return True
    return False


async def test_a_stopped_listener_drains_while_its_replacement_serves_the_same_port() -> None:
    with trio.fail_after(HANG_GUARD_S):
        async with listeners() as (ls, endpoint):
            port = await ls.start("listener http")
            old = ls.parts["listener http"]
            busy = await trio.open_tcp_stream("127.0.0.1", port)
            await busy.send_all(GET_SLOW)
            await endpoint.arrived.wait()

            # The stop returns with the request still held: the grace is never waited for.
            assert await ls.scoped.stop("listener http", grace_s=HANG_GUARD_S) == 1
            assert old.draining and not old.listening and old.open_connections == 1
            assert await refused(port)
            assert await ls.start("listener http", port) == port  # the port is free again
            fresh = await trio.open_tcp_stream("127.0.0.1", port)
            await fresh.send_all(GET_FAST)
            head = (await read_response(fresh)).split(b"\r\n\r\n")[0].lower()
            assert head.startswith(b"http/1.1 200") and b"connection: close" not in head
            assert ls.whole.open_connections == 2  # the draining one is still counted

            endpoint.release.set()
            head = (await read_response(busy)).split(b"\r\n\r\n")[0].lower()
            assert head.startswith(b"http/1.1 200") and b"connection: close" in head
            assert await closed_by_peer(busy)
            assert await old.wait_idle(HANG_GUARD_S)
            assert ls.whole.open_connections == 1  # the replacement's caller only
            assert not ls.parts["listener http"].draining
            await busy.aclose()
            await fresh.aclose()


async def test_an_h2_caller_of_a_stopped_listener_finishes_its_stream_then_gets_goaway() -> None:
    with trio.fail_after(HANG_GUARD_S):
        async with listeners() as (ls, endpoint):
            port = await ls.start("listener http")
            tcp = await trio.open_tcp_stream("127.0.0.1", port)
            client = H2Connection(tcp, client_side=True, ping_interval=None)
            async with trio.open_nursery() as nursery:
                await nursery.start(client.serve)
                headers = H2_GET_SLOW
                stream = await client.open_stream(headers, end_stream=True)
                await endpoint.arrived.wait()
                assert await ls.scoped.stop("listener http", grace_s=HANG_GUARD_S) == 1
                await trio.testing.wait_all_tasks_blocked()
                fast = [*headers[:3], (b":path", b"/fast")]
                late = await client.open_stream(fast, end_stream=True)
                with pytest.raises(StreamReset) as refused_stream:  # safe to send elsewhere
                    await late.response_headers()
                assert refused_stream.value.error_code == H2_REFUSED_STREAM
                endpoint.release.set()
                assert dict(await stream.response_headers())[b":status"] == b"200"
                body = b""
                while piece := await stream.receive_some():
                    body += piece
                assert body == b"done /slow"
                assert str(await client.wait_closed()) == "peer sent GOAWAY 0x0"
                nursery.cancel_scope.cancel()


async def test_the_grace_bounds_a_drained_listener() -> None:
    with trio.fail_after(HANG_GUARD_S):
        async with listeners() as (ls, endpoint):
            port = await ls.start("listener http")
            old = ls.parts["listener http"]
            busy = await trio.open_tcp_stream("127.0.0.1", port)
            await busy.send_all(GET_SLOW)
            await endpoint.arrived.wait()
            assert await ls.scoped.stop("listener http", grace_s=0.2) == 1
            assert await closed_by_peer(busy)  # cut with no answer once the grace is over
            await trio.testing.wait_all_tasks_blocked()  # the task unwinds after the cut
            assert old.open_connections == 0 and ls.whole.open_connections == 0
            assert old not in ls.whole._parts  # its task ended: the part is forgotten
            await busy.aclose()


@pytest.mark.parametrize("reload_first", [False, True])
async def test_shutdown_drains_every_listener_and_waits_for_the_draining_ones(
    reload_first: bool,
) -> None:
    with trio.fail_after(HANG_GUARD_S):
        async with listeners() as (ls, endpoint):
            first = await ls.start("listener one")
            second = await ls.start("listener two")
            busy = await trio.open_tcp_stream("127.0.0.1", first)
            await busy.send_all(GET_SLOW)
            await endpoint.arrived.wait()
            if reload_first:  # "one" is already draining when the shutdown comes
                assert await ls.scoped.stop("listener one", grace_s=HANG_GUARD_S) == 1
            async with trio.open_nursery() as nursery:
                idle_after: list[bool] = []

                async def shutdown() -> None:
                    idle_after.append(await ls.whole.start_and_wait(HANG_GUARD_S))

                nursery.start_soon(shutdown)
                await trio.testing.wait_all_tasks_blocked()
                assert all(part.draining for part in ls.parts.values())
                assert await refused(first) and await refused(second)
                assert not idle_after  # the request in flight holds the shutdown
                late = ls.whole.part("listener late")  # started during the shutdown
                assert late.draining
                late.detach()
                endpoint.release.set()
                head = (await read_response(busy)).split(b"\r\n\r\n")[0].lower()
                assert head.startswith(b"http/1.1 200") and b"connection: close" in head
            assert idle_after == [True] and ls.whole.open_connections == 0
            await busy.aclose()
