"""The HTTP listener with ``tls = true``: real TLS handshakes on 127.0.0.1.

The gateway presents its SVID; ALPN picks HTTP/1.1 or HTTP/2; a client certificate is
optional, and when presented it must verify against the bundle of its *own* trust domain
and then becomes the caller identity the peer sees in ``isthmus-caller-id``.
"""

from __future__ import annotations

import json
import logging
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from ipaddress import IPv4Address

import pytest
import trio

from gateway.config.model import ListenerConfig
from gateway.listener.http import serve_http_listener
from overlay.h2.connection import H2Connection
from tests.gateway.listener.listener_kit import (
    client_context,
)
from tests.gateway.router.router_kit import API, TEST_LIMITS, make_router, peer, peer_echo
from tests.overlay.identity.cases import CA_A, CA_B, CA_C, SERVER_CHAIN, SERVER_KEY, TRUSTED
from tests.overlay.identity.certfactory import identity, make_leaf

WEB_CALLER = "spiffe://b.test/ns/default/sa/web"


@asynccontextmanager
async def tls_gateway() -> AsyncIterator[int]:
    ident = identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED))
    config = ListenerConfig(
        name="https", kind="http", address=IPv4Address("127.0.0.1"), port=0, tls=True
    )
    async with peer(peer_echo("b")) as link, trio.open_nursery() as nursery:
        router = make_router({API: ("b",)}, links={"b": link})
        port = await nursery.start(
            partial(
                serve_http_listener,
                config,
                router,
                identity=ident,
                limits=TEST_LIMITS,
                local_site="a",
            )
        )
        yield port
        nursery.cancel_scope.cancel()


async def h1_over_tls(port: int, ctx: ssl.SSLContext) -> tuple[bytes, dict[str, object]]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, ctx, server_hostname="api.default.isthmus")
    with trio.fail_after(5):
        await stream.do_handshake()
        assert stream.selected_alpn_protocol() in (None, "http/1.1")
        await stream.send_all(
            b"GET /tls HTTP/1.1\r\nHost: api.default.isthmus\r\n"
            b"isthmus-caller-id: spiffe://evil.test/x\r\nConnection: close\r\n\r\n"
        )
        data = b""
        try:
            while piece := await stream.receive_some(65536):
                data += piece
        except trio.BrokenResourceError:
            pass  # the gateway closed without close_notify after Connection: close
    head, _, body = data.partition(b"\r\n\r\n")
    return head, json.loads(body)


def caller_ids(doc: dict[str, object]) -> list[str]:
    return [v for n, v in doc["headers"] if n == "isthmus-caller-id"]  # type: ignore[attr-defined]


async def test_tls_caller_with_svid_becomes_the_caller_identity() -> None:
    chain, key = make_leaf(CA_B, uris=[WEB_CALLER])
    async with tls_gateway() as port:
        head, doc = await h1_over_tls(port, client_context(["http/1.1"], chain, key))
    assert head.startswith(b"HTTP/1.1 200")
    assert doc["site"] == "b" and caller_ids(doc) == [WEB_CALLER]


async def test_tls_caller_without_certificate_is_anonymous() -> None:
    async with tls_gateway() as port:
        head, doc = await h1_over_tls(port, client_context(["http/1.1"]))
    assert head.startswith(b"HTTP/1.1 200") and caller_ids(doc) == []


@pytest.mark.usefixtures("caller_engine")
async def test_tls_alpn_h2_caller() -> None:
    chain, key = make_leaf(CA_B, uris=[WEB_CALLER])
    async with tls_gateway() as port:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        stream = trio.SSLStream(tcp, client_context(["h2"], chain, key), server_hostname="gw")
        with trio.fail_after(5):
            await stream.do_handshake()
            assert stream.selected_alpn_protocol() == "h2"
        client = H2Connection(stream, client_side=True, ping_interval=None)
        async with trio.open_nursery() as nursery:
            await nursery.start(client.serve)
            with trio.fail_after(5):
                h2 = await client.open_stream(
                    [
                        (b":method", b"GET"),
                        (b":scheme", b"https"),
                        (b":authority", b"api.default.isthmus"),
                        (b":path", b"/h2"),
                    ],
                    end_stream=True,
                )
                response = dict(await h2.response_headers())
                data = b""
                while piece := await h2.receive_some():
                    data += piece
            await client.aclose()
    assert response[b":status"] == b"200"
    assert caller_ids(json.loads(data)) == [WEB_CALLER]


@pytest.mark.parametrize(
    "ca, uri",
    [
        (CA_C, "spiffe://c.test/x"),  # untrusted CA: OpenSSL refuses
        (CA_A, WEB_CALLER),  # anchored in a.test but claims b.test: only SPIFFE catches it
    ],
    ids=["untrusted-ca", "wrong-trust-domain"],
)
async def test_bad_client_certificate_rejects_the_connection(ca: object, uri: str) -> None:
    chain, key = make_leaf(ca, uris=[uri])  # type: ignore[arg-type]
    async with tls_gateway() as port:
        tcp = await trio.open_tcp_stream("127.0.0.1", port)
        stream = trio.SSLStream(tcp, client_context(["http/1.1"], chain, key), server_hostname="gw")
        got = b""
        with trio.fail_after(5):
            try:
                await stream.do_handshake()  # TLS 1.3: the client finishes first
                await stream.send_all(b"GET / HTTP/1.1\r\nHost: api.default.isthmus\r\n\r\n")
                got = await stream.receive_some(65536)
            except trio.BrokenResourceError:
                pass
    assert got == b""  # never an HTTP answer


async def _bad_caller(port: int, ca: object, uri: str) -> None:
    chain, key = make_leaf(ca, uris=[uri])  # type: ignore[arg-type]
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = trio.SSLStream(tcp, client_context(["http/1.1"], chain, key), server_hostname="gw")
    with trio.fail_after(5):
        try:
            await stream.do_handshake()
            await stream.send_all(b"GET / HTTP/1.1\r\nHost: api.default.isthmus\r\n\r\n")
            await stream.receive_some(65536)
        except trio.BrokenResourceError:
            pass
        finally:
            await trio.aclose_forcefully(stream)


async def test_rejected_client_certificates_are_logged_once_per_cause_per_minute(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="isthmus.listener.http")
    async with tls_gateway() as port:
        for _ in range(3):
            await _bad_caller(port, CA_C, "spiffe://c.test/x")  # OpenSSL refuses the chain
            await _bad_caller(port, CA_A, WEB_CALLER)  # claims b.test, anchored in a.test
        await trio.sleep(61.0)
        await _bad_caller(port, CA_C, "spiffe://c.test/x")
    lines = [r.getMessage() for r in caplog.records if "rejected TLS caller" in r.getMessage()]
    assert len(lines) == 3, lines
    assert "client certificate rejected" in lines[0] and "suppressed" not in lines[0]
    assert "PeerRejected" in lines[1] and "bundle of b.test" in lines[1]
    assert "client certificate rejected" in lines[2]
    assert "(2 more like this suppressed since the last such line)" in lines[2]
    assert all("from 127.0.0.1:" in line for line in lines)
