"""Helpers for listener tests: a running HTTP listener and raw HTTP/1.1, h2c and TLS callers."""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from ipaddress import IPv4Address
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec

from gateway.config.model import LimitsConfig, ListenerConfig
from gateway.listener.drain import Drain
from gateway.listener.http import serve_http_listener
from gateway.router.route import Router
from overlay.h2.connection import H2Connection
from tests.gateway.router.router_kit import (
    TEST_LIMITS,
)
from tests.overlay.identity.cases import CA_A
from tests.overlay.identity.certfactory import key_pem, pem


@asynccontextmanager
async def http_listener(
    router: Router, *, limits: LimitsConfig = TEST_LIMITS, drain: Drain | None = None
) -> AsyncIterator[int]:
    config = ListenerConfig(name="http", kind="http", address=IPv4Address("127.0.0.1"), port=0)
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            partial(
                serve_http_listener,
                config,
                router,
                identity=None,
                limits=limits,
                local_site="a",
                drain=drain,
            )
        )
        yield port
        nursery.cancel_scope.cancel()


def dechunk(body: bytes) -> bytes:
    out = b""
    while True:
        size_line, _, rest = body.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return out
        out += rest[:size]
        body = rest[size + 2 :]


async def raw_exchange(port: int, request: bytes) -> tuple[int, dict[bytes, bytes], bytes]:
    """Send raw bytes, read until the gateway closes; return status, headers, body."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        with trio.fail_after(5):
            while piece := await stream.receive_some(65536):
                data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        headers[name.strip().lower()] = value.strip()
    if headers.get(b"transfer-encoding") == b"chunked":
        body = dechunk(body)
    return status, headers, body


async def h2c_request(
    port: int, headers: list[tuple[bytes, bytes]], body: bytes = b""
) -> tuple[dict[bytes, bytes], bytes]:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    client = H2Connection(tcp, client_side=True, ping_interval=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        with trio.fail_after(5):
            stream = await client.open_stream(headers, end_stream=not body)
            if body:
                await stream.send_all(body)
                await stream.send_eof()
            response = dict(await stream.response_headers())
            data = b""
            while piece := await stream.receive_some():
                data += piece
        await client.aclose()
    return response, data


def client_context(
    alpn: list[str],
    chain: Sequence[x509.Certificate] | None = None,
    key: ec.EllipticCurvePrivateKey | None = None,
) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False  # SPIFFE IDs are not host names
    ctx.load_verify_locations(cadata=pem([CA_A.cert]).decode())
    ctx.set_alpn_protocols(alpn)
    if chain is not None and key is not None:
        with tempfile.TemporaryDirectory() as d:
            path = Path(d) / "id.pem"
            path.write_bytes(pem(chain) + key_pem(key))
            ctx.load_cert_chain(path)
    return ctx
