"""Plain clients for end-to-end tests: an HTTP/1.1 caller (stdlib, in a thread) and an
HTTP/2 prior-knowledge caller (the project's H2Connection over a TCP socket).  Neither knows
anything about Isthmus: they are the unmodified callers a gateway must serve.

Both take an optional ``tls`` client context (``tls_client_context``): HTTP/1.1 over TLS, and
HTTP/2 over TLS with whatever ALPN the context offers -- as a workload with an SVID calls its
gateway's ``tls = true`` listener."""

from __future__ import annotations

import http.client
import json
import ssl
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio

from overlay.h2.connection import H2Connection


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def tls_client_context(
    server_bundle: Path,
    *,
    alpn: Sequence[str] = ("http/1.1",),
    svid: Path | None = None,
    key: Path | None = None,
) -> ssl.SSLContext:
    """A caller's TLS context: trusts ``server_bundle`` (PEM) for the gateway's SVID, offers
    ``alpn``, and presents the certificate chain ``svid`` with ``key`` when given.  No host
    name check: a gateway's SVID names a SPIFFE ID, not a host."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cafile=str(server_bundle))
    ctx.set_alpn_protocols(list(alpn))
    if svid is not None:
        ctx.load_cert_chain(str(svid), str(key) if key is not None else None)
    return ctx


def _h1(
    host: str,
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | Iterable[bytes] | None,
    timeout: float,
    tls: ssl.SSLContext | None = None,
) -> Reply:
    conn = (
        http.client.HTTPConnection(host, port, timeout=timeout)
        if tls is None
        else http.client.HTTPSConnection(host, port, timeout=timeout, context=tls)
    )
    try:
        chunked = body is not None and not isinstance(body, bytes)
        conn.request(method, path, body=body, headers=headers, encode_chunked=chunked)
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data)
    finally:
        conn.close()


async def h1_request(
    host: str,
    port: int,
    *,
    authority: str,
    path: str = "/",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    body: bytes | Iterable[bytes] | None = None,
    request_timeout_s: float = 30.0,
    tls: ssl.SSLContext | None = None,
) -> Reply:
    """An HTTP/1.1 request to ``host:port`` with ``Host: authority`` (over TLS with ``tls``)."""
    all_headers = {"Host": authority, **(headers or {})}
    if body is not None and not isinstance(body, bytes):
        all_headers["Transfer-Encoding"] = "chunked"
    return await trio.to_thread.run_sync(
        _h1,
        host,
        port,
        method,
        path,
        all_headers,
        body,
        request_timeout_s,
        tls,
        abandon_on_cancel=True,
    )


async def h2_request(
    host: str,
    port: int,
    *,
    authority: str,
    path: str = "/",
    method: str = "GET",
    headers: list[tuple[str, str]] | None = None,
    body: bytes = b"",
    tls: ssl.SSLContext | None = None,
) -> Reply:
    """An HTTP/2 request on a fresh connection: prior knowledge (h2c), or over TLS with
    ``tls`` (whose ALPN should offer ``h2``)."""
    tcp = await trio.open_tcp_stream(host, port)
    transport: trio.abc.Stream = tcp
    if tls is not None:
        transport = trio.SSLStream(tcp, tls, server_hostname=authority.partition(":")[0])
    conn = H2Connection(transport, client_side=True, ping_interval=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.serve)
        request = [
            (":method", method),
            (":scheme", "http" if tls is None else "https"),
            (":authority", authority),
            (":path", path),
            *(headers or []),
        ]
        stream = await conn.open_stream(request, end_stream=not body)
        if body:
            await stream.send_all(body)
            await stream.send_eof()
        head = await stream.response_headers()
        data = b""
        while piece := await stream.receive_some():
            data += piece
        await conn.aclose()
        nursery.cancel_scope.cancel()
    hdrs = {n.decode(): v.decode() for n, v in head}
    return Reply(int(hdrs[":status"]), hdrs, data)
