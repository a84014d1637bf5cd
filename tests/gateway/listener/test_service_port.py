"""Service ports: a local port bound to a service, for clients that only know host:port."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from ipaddress import IPv4Address
from typing import Literal

import trio

from gateway.config.model import ServicePortConfig
from gateway.listener.service_port import serve_service_port
from gateway.router.route import Router
from tests.gateway.router.router_kit import (
    API,
    DB,
    TEST_LIMITS,
    StandInCluster,
    make_router,
    peer,
    peer_echo,
    serving,
    tcp_echo_backend,
)


@asynccontextmanager
async def service_port(
    router: Router, target: str, protocol: Literal["tcp", "http"]
) -> AsyncIterator[int]:
    config = ServicePortConfig(
        name="legacy", address=IPv4Address("127.0.0.1"), port=0, target=target, protocol=protocol
    )
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_service_port, config, router, limits=TEST_LIMITS, local_site="a")
        )
        yield port
        nursery.cancel_scope.cancel()


async def echo_roundtrip(port: int, payload: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(payload)
        await stream.send_eof()  # half-close: the answer still flows back
        data = b""
        with trio.fail_after(5):
            while piece := await stream.receive_some(65536):
                data += piece
    return data


async def test_tcp_service_port_to_local_and_remote_service() -> None:
    payload = bytes(range(256)) * 1000
    async with serving(tcp_echo_backend) as tcp_port, peer(peer_echo("b")) as link:
        local = make_router({DB: ("a",)}, cluster=StandInCluster(tcp={DB: tcp_port}))
        async with service_port(local, "db.default.isthmus", "tcp") as port:
            assert await echo_roundtrip(port, payload) == payload
        remote = make_router({DB: ("b",)}, links={"b": link})
        async with service_port(remote, "db.default.isthmus", "tcp") as port:
            assert await echo_roundtrip(port, payload) == payload


async def test_tcp_service_port_to_unreachable_service_closes() -> None:
    router = make_router({DB: ("b",)}, links={"b": None})
    async with service_port(router, "db.default.isthmus", "tcp") as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            with trio.fail_after(5):
                try:
                    await stream.send_all(b"hello")
                    assert await stream.receive_some(1024) == b""
                except trio.BrokenResourceError:
                    pass  # closed with unread input: RST is a close too


async def test_http_service_port_routes_every_request_to_its_target() -> None:
    async with peer(peer_echo("b")) as link:
        router = make_router({API: ("b",)}, links={"b": link})
        async with service_port(router, "api.default.isthmus", "http") as port:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(
                    b"GET /legacy HTTP/1.1\r\nHost: 10.0.0.7:8080\r\nConnection: close\r\n\r\n"
                )
                data = b""
                with trio.fail_after(5):
                    while piece := await stream.receive_some(65536):
                        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    doc = json.loads(body)
    assert doc["site"] == "b" and doc["path"] == "/legacy"
    assert [v for n, v in doc["headers"] if n == ":authority"] == ["api.default.isthmus"]


async def test_http_service_port_refuses_connect() -> None:
    router = make_router({API: ("a",)})
    async with service_port(router, "api.default.isthmus", "http") as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(b"CONNECT x.y.isthmus:1 HTTP/1.1\r\nHost: x.y.isthmus:1\r\n\r\n")
            with trio.fail_after(5):
                data = await stream.receive_some(65536)
    assert data.startswith(b"HTTP/1.1 400")
