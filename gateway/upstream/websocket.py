"""Ask an HTTP/1.1 endpoint to switch to WebSocket (the last hop of a WebSocket).

Why a fresh connection and not the pool: a connection that switched protocols never carries
another HTTP/1.1 exchange, and one that refused may be mid-body when the caller stops
reading; neither goes back to a pool, so the upgrade always dials its own (a refusal's
connection is closed after its response, as :class:`~gateway.http.exchange.UpgradeResult`'s
owner closes ``stream``).

Theory of operation
-------------------
1. Connect (bounded by ``connect_timeout``; a failure is ``EndpointConnectFailed``, so
   another endpoint or site may be tried: nothing reached this one).
2. Send the handshake (:func:`~gateway.http.websocket.h1_upgrade_head`: the caller's key,
   version, protocols, extensions and end-to-end fields, plus ``Connection: upgrade``,
   ``Upgrade: websocket``) and read the answer.
3. ``101``: checked (:func:`~gateway.http.websocket.check_switch`, else 502); the bytes the
   endpoint sent right after its head are handed out first, then the connection is the
   tunnel.  Anything else: the response is relayed as it is, body and trailers
   (:func:`gateway.upstream.endpoint_h1.relay_h1_response`), less any
   ``Sec-WebSocket-Accept`` (:func:`~gateway.http.websocket.refusal_fields`).

The deadline is the owner's (the cluster's ``trio.move_on_at(ctx.deadline)``).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace

import trio

from discovery.model import Endpoint
from gateway.http.exchange import (
    EmptyBody,
    Request,
    Response,
    ResponseWriter,
    UpgradeResult,
    no_refusal,
)
from gateway.http.h1_client import H1ClientConnection
from gateway.http.h1_connection import H1Limits
from gateway.http.transcode import ContentLengthCounter, h1_response_to_h2
from gateway.http.websocket import (
    WEBSOCKET,
    check_switch,
    h1_upgrade_head,
    refusal_fields,
    switch_fields,
)
from gateway.prefixed import PrefixedStream
from gateway.upstream.endpoint_h1 import BodyPump, relay_h1_response
from gateway.upstream.pool import open_tcp


async def upgrade_h1_endpoint(
    endpoint: Endpoint,
    request: Request,
    *,
    connect_timeout: float,
    limits: H1Limits,
) -> UpgradeResult:
    """Ask ``endpoint`` to switch ``request`` (a WebSocket request) to WebSocket."""
    head = h1_upgrade_head(request)
    key = head.get(b"sec-websocket-key") or b""
    tcp = await open_tcp(endpoint, connect_timeout=connect_timeout)
    try:
        conn = H1ClientConnection(tcp, limits)
        await conn.send_request(head, has_body=False, end=True, upgrade=WEBSOCKET)
        response = await conn.receive_response(upgrade=True)
        if response.status == 101:
            check_switch(response, key)
            fields = switch_fields(h1_response_to_h2(response)[1:])
            leftover = conn.take_buffered()
            stream = PrefixedStream(tcp, leftover) if leftover else tcp
            return UpgradeResult(Response(101, fields), stream, no_refusal)
    except BaseException:
        with trio.CancelScope(shield=True), contextlib.suppress(Exception):
            await trio.aclose_forcefully(tcp)
        raise

    refusal = replace(response, headers=refusal_fields(response.headers))

    async def relay_refusal(writer: ResponseWriter) -> None:
        pump = BodyPump(EmptyBody(), ContentLengthCounter(None))
        await relay_h1_response(conn, request, refusal, writer, pump)

    return UpgradeResult(
        Response(refusal.status, h1_response_to_h2(refusal)[1:]), tcp, relay_refusal
    )
