"""WebSocket through real gateway processes, with a real WebSocket client and server.

Two gateways (east, west) on loopback.  The endpoints run in the test process: a
trio-websocket echo server (wsproto underneath) per site, and a raw HTTP/1.1 endpoint in west
that records every request head it receives.  The client is trio-websocket too, on a plain
TCP connection to east's HTTP listener with ``Host`` = the L7 address: nothing in it knows
about Isthmus.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import pytest
import trio
import trio_websocket

from gateway.demo.topology import DemoService
from tests.e2e.harness import Overlay, make_topology, open_overlay, routes_of

pytestmark = pytest.mark.e2e

HTTP_PORT = 15080
WS_PORT = 18095
RECORDER_PORT = 18096
BIG = 100 * 1024  # one message well above 64 KiB: many DATA frames, several tunnel reads


def _topology() -> object:
    return make_topology(
        ["east", "west"],
        {
            "east": (DemoService("ws", "http", WS_PORT),),
            "west": (
                DemoService("ws", "http", WS_PORT),
                DemoService("rec", "http", RECORDER_PORT),
            ),
        },
    )


def _addr(ov: Overlay, site: str) -> str:
    return str(ov.built[site].site.address)


class Echo:
    """What the echo endpoint of one site saw: request paths and close codes."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.paths: list[str] = []
        self.closes: list[int | None] = []
        self.closed = trio.Event()

    async def handle(self, request: trio_websocket.WebSocketRequest) -> None:
        self.paths.append(request.path)
        offered = request.proposed_subprotocols
        ws = await request.accept(subprotocol=offered[0] if offered else None)
        await ws.send_message(f"hello from {self.site}")
        try:
            while True:
                message = await ws.get_message()
                await ws.send_message(message)
        except trio_websocket.ConnectionClosed as exc:
            self.closes.append(exc.reason.code if exc.reason else None)
            self.closed.set()


class Recorder:
    """A raw HTTP/1.1 endpoint that records each request head; 403 + body to any upgrade
    request (a WebSocket handshake it refuses), 200 to anything else."""

    def __init__(self) -> None:
        self.heads: list[bytes] = []

    async def handle(self, stream: trio.SocketStream) -> None:
        buf = b""
        with trio.move_on_after(10):
            while b"\r\n\r\n" not in buf and len(buf) < 65536:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
        head = buf.partition(b"\r\n\r\n")[0]
        self.heads.append(head)
        if b"\r\nupgrade:" in head.lower():
            body = b"no websockets here"
            answer = b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n"
        else:
            body = b"plain"
            answer = b"HTTP/1.1 200 OK\r\n"
        answer += b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
        try:
            await stream.send_all(answer + body)
        finally:
            await stream.aclose()


@asynccontextmanager
async def _endpoints(ov: Overlay) -> AsyncIterator[tuple[dict[str, Echo], Recorder]]:
    echoes = {site: Echo(site) for site in ("east", "west")}
    recorder = Recorder()
    async with trio.open_nursery() as nursery:
        for site, echo in echoes.items():
            await nursery.start(
                partial(
                    trio_websocket.serve_websocket,
                    echo.handle,
                    _addr(ov, site),
                    WS_PORT,
                    None,
                    handler_nursery=nursery,
                )
            )
        await nursery.start(
            partial(trio.serve_tcp, recorder.handle, RECORDER_PORT, host=_addr(ov, "west"))
        )
        yield echoes, recorder
        nursery.cancel_scope.cancel()


async def _converged(ov: Overlay) -> None:
    both = ["east", "west"]
    await ov.wait("east", "/routes", lambda d: routes_of(d, "ws.default.isthmus") == both)
    await ov.wait("east", "/routes", lambda d: routes_of(d, "rec.default.isthmus") == ["west"])


@asynccontextmanager
async def _client(
    ov: Overlay, authority: str, resource: str, nursery: trio.Nursery
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    stream = await trio.open_tcp_stream(_addr(ov, "east"), HTTP_PORT)
    ws = await trio_websocket.wrap_client_stream(
        nursery, stream, authority, resource, subprotocols=["echo.v1"], max_message_size=1 << 20
    )
    try:
        yield ws
    finally:
        await ws.aclose()


async def _echo_session(ov: Overlay, authority: str, site: str, echo: Echo) -> None:
    """Text and binary messages (one > 64 KiB) echo through; then a clean close (1000)."""
    async with (
        trio.open_nursery() as nursery,
        _client(ov, authority, "/chat?room=1", nursery) as ws,
    ):
        assert ws.subprotocol == "echo.v1"  # Sec-WebSocket-Protocol went both ways
        assert await ws.get_message() == f"hello from {site}"  # sent right after the 101
        messages: list[str | bytes] = [
            "first",
            b"\x00\x01\x02binary\xff",
            "x" * 1000,
            bytes(range(256)) * (BIG // 256),
            "último ✓",
            b"",
        ]
        for message in messages:
            await ws.send_message(message)
            assert await ws.get_message() == message
        await ws.aclose()
        assert ws.closed is not None and ws.closed.code == 1000
        nursery.cancel_scope.cancel()
    with trio.fail_after(10):
        await echo.closed.wait()
    echo.closed = trio.Event()
    assert echo.closes == [1000]
    assert echo.paths == ["/chat?room=1"]


async def test_websocket_crosses_two_gateways_and_same_site(tmp_path: Path) -> None:
    async with open_overlay(tmp_path, _topology()) as ov, _endpoints(ov) as (echoes, _):
        await _converged(ov)
        with trio.fail_after(60):
            # east -> link (RFC 8441 extended CONNECT) -> west -> HTTP/1.1 Upgrade -> echo
            await _echo_session(ov, "ws.default.west.isthmus", "west", echoes["west"])
            # same site: east -> HTTP/1.1 Upgrade -> east's echo (the any-site address is
            # served locally first)
            await _echo_session(ov, "ws.default.isthmus", "east", echoes["east"])


async def _raw(ov: Overlay, request: bytes) -> tuple[bytes, bytes]:
    """Send ``request`` to east's HTTP listener; the head and body of its answer."""
    stream = await trio.open_tcp_stream(_addr(ov, "east"), HTTP_PORT)
    try:
        await stream.send_all(request)
        data = b""
        with trio.fail_after(20):
            while piece := await stream.receive_some(65536):
                data += piece
    finally:
        await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


async def test_unsupported_upgrades_get_501_and_never_reach_the_endpoint(tmp_path: Path) -> None:
    async with open_overlay(tmp_path, _topology()) as ov, _endpoints(ov) as (_, recorder):
        await _converged(ov)
        with trio.fail_after(60):
            h2c = (
                b"GET /h2c HTTP/1.1\r\nHost: rec.default.isthmus\r\n"
                b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                b"HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n"
            )
            foo = (
                b"GET /foo HTTP/1.1\r\nHost: rec.default.isthmus\r\n"
                b"Connection: Upgrade\r\nUpgrade: foo/2\r\n\r\n"
            )
            for request in (h2c, foo):
                head, body = await _raw(ov, request)
                assert head.startswith(b"HTTP/1.1 501"), head
                assert b"only 'websocket'" in body
            # The route itself works: a plain GET reaches the endpoint, and is all it saw.
            head, body = await _raw(
                ov, b"GET /plain HTTP/1.1\r\nHost: rec.default.isthmus\r\nConnection: close\r\n\r\n"
            )
            assert head.startswith(b"HTTP/1.1 200") and body == b"plain"
            assert [h.split(b"\r\n")[0] for h in recorder.heads] == [b"GET /plain HTTP/1.1"]


async def test_websocket_refused_by_the_endpoint_gives_the_caller_its_answer(
    tmp_path: Path,
) -> None:
    async with open_overlay(tmp_path, _topology()) as ov, _endpoints(ov) as (_, recorder):
        await _converged(ov)
        rejected: trio_websocket.ConnectionRejected | None = None
        with trio.fail_after(60):
            try:
                async with (
                    trio.open_nursery() as nursery,
                    _client(ov, "rec.default.isthmus", "/ws", nursery),
                ):
                    pytest.fail("the handshake must not succeed")
            except trio_websocket.ConnectionRejected as exc:
                rejected = exc
            except BaseExceptionGroup as group:  # raised in the client's reader task
                found, _ = group.split(trio_websocket.ConnectionRejected)
                assert found is not None, group
                leaf = found.exceptions[0]
                while isinstance(leaf, BaseExceptionGroup):
                    leaf = leaf.exceptions[0]
                assert isinstance(leaf, trio_websocket.ConnectionRejected)
                rejected = leaf
        assert rejected is not None
        assert rejected.status_code == 403 and rejected.body == b"no websockets here"
        # The endpoint got a real WebSocket handshake (not a GET stripped of its upgrade).
        [head] = recorder.heads
        lower = head.lower()
        assert head.startswith(b"GET /ws HTTP/1.1\r\n")
        assert b"\r\nupgrade: websocket" in lower and b"\r\nsec-websocket-key: " in lower
        assert b"\r\nhost: rec.default.isthmus" in lower
        # ... and, like any request, it tells the endpoint its caller (written by west).
        assert b"\r\nx-isthmus-caller-site: east" in lower
