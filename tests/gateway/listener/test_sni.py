"""The SNI listener: a real TLS handshake passes through untouched (the gateway holds no key).

The workload's TLS server has a certificate for the L7 address from a trustme CA the gateway
knows nothing about; the caller verifies it end to end, through the local cluster and
through a real HTTP/2 CONNECT tunnel to a peer.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from ipaddress import IPv4Address

import pytest
import trio
import trustme

from gateway.config.model import LimitsConfig, ListenerConfig
from gateway.listener.sni import serve_sni_listener
from gateway.relay import splice
from gateway.router.route import Router
from overlay.h2.stream import H2Stream
from tests.gateway.router.router_kit import API, TEST_LIMITS, StandInCluster, make_router, peer

NAME = "api.default.isthmus"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@asynccontextmanager
async def tls_backend(ca: trustme.CA) -> AsyncIterator[int]:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(NAME).configure_cert(ctx)

    async def handler(stream: trio.SSLStream[trio.SocketStream]) -> None:
        try:
            data = await stream.receive_some(1024)
            await stream.send_all(b"backend got " + data + b" via " + NAME.encode())
            await stream.aclose()
        except trio.BrokenResourceError:
            pass

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_ssl_over_tcp, handler, 0, ctx, host="127.0.0.1")
        )
        yield listeners[0].transport_listener.socket.getsockname()[1]
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def sni_listener(router: Router, limits: LimitsConfig = TEST_LIMITS) -> AsyncIterator[int]:
    config = ListenerConfig(name="sni", kind="sni", address=IPv4Address("127.0.0.1"), port=0)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(serve_sni_listener, config, router, limits=limits, local_site="a")
        )
        yield port
        nursery.cancel_scope.cancel()


async def tls_call(port: int, ca: trustme.CA, sni: str = NAME) -> bytes:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, ctx, server_hostname=sni)
    with trio.fail_after(5):
        await stream.do_handshake()
        await stream.send_all(b"hello")
        data = b""
        try:
            while piece := await stream.receive_some(1024):
                data += piece
        except trio.BrokenResourceError:
            pass
    return data


def relay_to(port: int):  # type: ignore[no-untyped-def]
    """A peer gateway that serves CONNECT by relaying to a local TCP port."""

    async def handler(stream: H2Stream) -> None:
        backend = await trio.open_tcp_stream("127.0.0.1", port)
        await stream.send_headers([(b":status", b"200")])
        async with backend:
            await splice(stream, backend)

    return handler


async def test_tls_passes_untouched_to_a_local_workload(ca: trustme.CA) -> None:
    async with tls_backend(ca) as backend_port:
        router = make_router({API: ("a",)}, cluster=StandInCluster(tcp={API: backend_port}))
        async with sni_listener(router) as port:
            assert await tls_call(port, ca) == b"backend got hello via " + NAME.encode()


async def test_tls_passes_untouched_through_a_peer_connect_tunnel(ca: trustme.CA) -> None:
    async with tls_backend(ca) as backend_port, peer(relay_to(backend_port)) as link:
        router = make_router({API: ("b",)}, links={"b": link})
        async with sni_listener(router) as port:
            assert await tls_call(port, ca) == b"backend got hello via " + NAME.encode()


async def closed_without_answer(port: int, send: bytes) -> bool:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        with trio.fail_after(3):
            try:
                if send:
                    await stream.send_all(send)
                return await stream.receive_some(1024) == b""
            except trio.BrokenResourceError:
                return True


@pytest.mark.parametrize(
    "payload",
    [b"GET / HTTP/1.1\r\nHost: api.default.isthmus\r\n\r\n", b"\x16\x03\x01\x00\x05hello"],
    ids=["not-tls", "malformed-hello"],
)
async def test_garbage_is_closed(payload: bytes) -> None:
    router = make_router({API: ("a",)})
    async with sni_listener(router) as port:
        assert await closed_without_answer(port, payload)


async def test_sni_outside_the_mesh_or_unknown_is_closed(ca: trustme.CA) -> None:
    async with tls_backend(ca) as backend_port:
        router = make_router({API: ("a",)}, cluster=StandInCluster(tcp={API: backend_port}))
        async with sni_listener(router) as port:
            for sni in ("www.example.com", "nope.default.isthmus"):
                with pytest.raises((ssl.SSLError, trio.BrokenResourceError)):
                    await tls_call(port, ca, sni)


async def test_stalled_client_hello_is_closed_at_the_timeout() -> None:
    limits = replace(TEST_LIMITS, tls_handshake_timeout_s=0.3)
    router = make_router({API: ("a",)})
    async with sni_listener(router, limits) as port:
        assert await closed_without_answer(port, b"\x16\x03\x01")  # a hello that never ends
