"""Plain clients for end-to-end tests: an HTTP/1.1 caller (stdlib, in a thread) and an
HTTP/2 prior-knowledge caller (the project's H2Connection over a TCP socket).  Neither knows
anything about Isthmus: they are the unmodified callers a gateway must serve."""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import trio

from overlay.link.h2_connection import H2Connection


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def _h1(
    host: str,
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | Iterable[bytes] | None,
    timeout: float,
) -> Reply:
    conn = http.client.HTTPConnection(host, port, timeout=timeout)
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
) -> Reply:
    """An HTTP/1.1 request to ``host:port`` with ``Host: authority``."""
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
) -> Reply:
    """An HTTP/2 prior-knowledge (h2c) request on a fresh connection."""
    tcp = await trio.open_tcp_stream(host, port)
    conn = H2Connection(tcp, client_side=True, ping_interval=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(conn.serve)
        request = [
            (":method", method),
            (":scheme", "http"),
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
