"""HTTP/2 from local callers (h2c prior knowledge, TLS + ALPN ``h2``).

Each stream becomes a :class:`~gateway.http.exchange.Request` (caller-set ``isthmus-*``
headers removed first: only gateways may set them); ``CONNECT <l7-address>:<port>`` opens an L4
tunnel (``router.open_l4``) and relays the stream to it.  An error before the response head is
the mapped response; after it the stream is reset.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import trio

from foundation.errors import H2_INTERNAL_ERROR, H2_NO_ERROR, IsthmusError
from foundation.spiffe_id import SpiffeId
from gateway.config.model import LimitsConfig
from gateway.http.errors import MalformedHeaders
from gateway.http.exchange import EmptyBody, Request
from gateway.http.h2_adapter import H2ResponseWriter
from gateway.http.message import Headers
from gateway.http.overlay_headers import CALLER_ENTRY_STRIPPED
from gateway.http.rescue import rescue_h2
from gateway.http.transcode import (
    ContentLengthCounter,
    declared_content_length,
    h2_request_to_h1,
)
from gateway.listener.caller_stream import mark_failed
from gateway.listener.tcp import call_context
from gateway.relay import relay_l4
from gateway.router.route import Router
from overlay.h2.connection import H2Connection
from overlay.h2.limits import H2Limits
from overlay.h2.stream import ConnectionGone, H2Stream

if TYPE_CHECKING:
    from gateway.listener.drain import Drain

log = logging.getLogger("isthmus.listener.http")


def request_from_h2_block(block: Headers) -> Request:
    """A :class:`Request` from a validated HTTP/2 header block (pseudo-headers first)."""
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[bytes, bytes]] = []
    for name, value in block:
        if name.startswith(b":"):
            pseudo[name] = value
        elif name not in CALLER_ENTRY_STRIPPED and name != b"host":
            regular.append((name, value))
    authority = pseudo.get(b":authority")
    if authority is None:
        authority = next((v for n, v in block if n == b"host"), b"")
    return Request(
        method=pseudo[b":method"],
        scheme=pseudo.get(b":scheme", b""),
        authority=authority,
        path=pseudo.get(b":path", b""),
        headers=tuple(regular),
    )


class _H2RequestBody:
    """A downstream HTTP/2 request body, checked against its Content-Length."""

    def __init__(self, stream: H2Stream, declared: int | None) -> None:
        self.stream = stream
        self.counter = ContentLengthCounter(declared)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.stream.receive_some(max_bytes)
        if data:
            self.counter.data(len(data))
        else:
            self.counter.end()
        return data

    @property
    def trailers(self) -> Headers:
        return tuple(self.stream.trailers or ())


async def serve_h2_stream(
    stream: H2Stream,
    router: Router,
    *,
    limits: LimitsConfig,
    local_site: str,
    caller_id: SpiffeId | None,
) -> None:
    """Serve one HTTP/2 request from a local caller."""
    writer = H2ResponseWriter(stream)
    ctx = call_context(limits, local_site, caller_id)
    try:
        h2_request_to_h1(stream.request_headers)  # RFC 9113 8.1.1: malformed is never forwarded
        request = request_from_h2_block(tuple(stream.request_headers))
        if request.is_connect:
            upstream = await router.open_l4(request.authority, ctx)
            await stream.send_headers([(b":status", b"200")])
            await relay_l4(stream, upstream, limits, what="CONNECT")
            return
        declared = declared_content_length(request.headers, MalformedHeaders)
        body = (
            EmptyBody()
            if stream.statistics().remote_ended and not stream.statistics().buffered
            else _H2RequestBody(stream, declared)
        )
        await router.forward(request, body, writer, ctx)
    except IsthmusError as exc:
        log.debug("h2 request failed: %r", exc)
        await rescue_h2(stream, writer, exc)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        stream.reset(H2_INTERNAL_ERROR)


def h2_limits(limits: LimitsConfig) -> H2Limits:
    return H2Limits(
        max_concurrent_streams=limits.h2_max_concurrent_streams,
        stream_window=limits.h2_stream_window,
        connection_window=limits.h2_connection_window,
        max_header_list_size=limits.h2_max_header_list_bytes,
        engine=limits.caller_h2_engine,
    )


async def serve_h2_connection(
    stream: trio.abc.Stream,
    router: Router,
    *,
    limits: LimitsConfig,
    local_site: str,
    caller_id: SpiffeId | None = None,
    drain: Drain | None = None,
) -> None:
    """Serve an HTTP/2 connection from a local caller until it closes.

    ``drain``: once it begins, new streams are refused (``REFUSED_STREAM``, safe to retry),
    the open ones finish, then the connection closes with GOAWAY."""

    async def handler(h2_stream: H2Stream) -> None:
        await serve_h2_stream(
            h2_stream, router, limits=limits, local_site=local_site, caller_id=caller_id
        )

    def on_close(reason: ConnectionGone) -> None:
        # A connection closed with an error code (protocol error, flood) may still have bytes
        # queued for a caller that does not read: close it with RST then.  (A broken
        # transport is closed already; a send timeout reset it.)
        if reason.error_code != H2_NO_ERROR:
            mark_failed(stream)

    conn = H2Connection(
        stream,
        client_side=False,
        handler=handler,
        limits=h2_limits(limits),
        ping_interval=None,
        idle_timeout=limits.idle_timeout_s,
        on_close=on_close,
    )
    if drain is None:
        await conn.serve()
        return
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_close_on_drain, conn, drain)
        await conn.serve()
        nursery.cancel_scope.cancel()


async def _close_on_drain(conn: H2Connection, drain: Drain) -> None:
    await drain.wait_begun()
    await conn.drain()  # the drain's owner bounds it with its grace
    await conn.aclose()
