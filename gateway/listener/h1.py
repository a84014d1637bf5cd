"""HTTP/1.1 from local callers, with ``CONNECT`` and the WebSocket upgrade.

Each request becomes a :class:`~gateway.http.exchange.Request` (caller-set ``isthmus-*`` and
``x-isthmus-*`` headers removed first: only gateways may set them; an absolute-form target is
HTTP proxy mode, its authority is the route).  ``CONNECT <l7-address>:<port>`` opens an L4 tunnel
(``router.open_l4``) and relays the connection to it.  ``Upgrade: websocket`` is carried
(:mod:`gateway.http.websocket`): the handshake is routed like an L4 tunnel
(``router.open_websocket``, bounded by the route timeout); the endpoint's ``101`` goes back to
the caller with its fields, then bytes are relayed like ``CONNECT``'s; a refusal (any other
status) is the caller's answer.  Every other upgrade is 501 and never forwarded.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

import trio

from foundation.errors import IsthmusError
from foundation.spiffe_id import SpiffeId
from gateway.config.model import LimitsConfig
from gateway.http.caller_side import CallerGone
from gateway.http.errors import BadRequest
from gateway.http.exchange import Body, CallContext, EmptyBody, Request
from gateway.http.framing import FramingKind, request_framing
from gateway.http.h1_adapter import H1Body, H1ResponseWriter
from gateway.http.h1_connection import H1Limits
from gateway.http.h1_server import H1ServerConnection
from gateway.http.message import RequestHead
from gateway.http.overlay_headers import CALLER_ENTRY_STRIPPED
from gateway.http.rescue import rescue_h1
from gateway.http.transcode import h1_head_for_transcoded, h1_request_to_h2, parse_proxy_target
from gateway.http.websocket import encode_switch, requested_upgrade, websocket_request
from gateway.listener.caller_stream import mark_failed
from gateway.listener.h2 import request_from_h2_block
from gateway.listener.tcp import call_context
from gateway.relay import relay_l4
from gateway.router.route import Router, RouteTimeout

if TYPE_CHECKING:
    from gateway.listener.drain import Drain

log = logging.getLogger("isthmus.listener.http")


def h1_limits(limits: LimitsConfig) -> H1Limits:
    return H1Limits(
        max_head_bytes=limits.max_header_bytes,
        max_headers=limits.max_headers,
        head_timeout_s=limits.header_timeout_s,
        idle_timeout_s=limits.idle_timeout_s,
        parser=limits.http1_parser,
    )


def request_from_h1(head: RequestHead, *, scheme: bytes, target: bytes | None = None) -> Request:
    """The internal request for an HTTP/1.1 head; ``target`` (a service port's L7 address)
    replaces whatever authority the caller named.

    Caller-set ``isthmus-*`` and ``x-isthmus-*`` fields are removed here, at the entry
    (:data:`~gateway.http.overlay_headers.CALLER_ENTRY_STRIPPED`).  The request carries the
    HTTP/1.1 head an HTTP/1.1 endpoint gets (``h1_head``), derived from this already
    validated head rather than validated again from its HTTP/2 form at the endpoint."""
    fields = tuple((n, v) for n, v in head.headers if n not in CALLER_ENTRY_STRIPPED)
    path = head.target
    if target is not None:
        proxy = parse_proxy_target(head.method, head.target)
        if proxy is not None and head.method != b"CONNECT":
            path = proxy.path
        fields = ((b"host", target), *((n, v) for n, v in fields if n != b"host"))
    block = h1_request_to_h2(
        RequestHead(head.method, path, head.http_version, fields), scheme=scheme
    )
    if head.method == b"CONNECT":
        return request_from_h2_block(block)
    # The block is ours: :method :scheme :authority :path, then regular fields that are
    # already without host and the entry-stripped ones (what request_from_h2_block gives).
    (_, method), (_, scheme), (_, authority), (_, path) = block[:4]
    regular = block[4:]
    return Request(
        method,
        scheme,
        authority,
        path,
        regular,
        h1_head=h1_head_for_transcoded(method, authority, path, regular),
    )


def h1_body(conn: H1ServerConnection, head: RequestHead) -> Body:
    """The request body, or :class:`EmptyBody` when the framing says there is none: a tunnel
    then opens its stream with END_STREAM (no empty DATA frame, no body task)."""
    framing = request_framing(head)  # validated by next_request(); cannot raise here
    if framing.kind is FramingKind.NONE or (
        framing.kind is FramingKind.LENGTH and framing.length == 0
    ):
        return EmptyBody()
    return H1Body(conn)


async def serve_h1_connection(
    stream: trio.abc.Stream,
    router: Router,
    *,
    limits: LimitsConfig,
    local_site: str,
    caller_id: SpiffeId | None = None,
    scheme: bytes = b"http",
    target: bytes | None = None,
    drain: Drain | None = None,
) -> None:
    """Serve HTTP/1.1 requests on ``stream`` until the caller or an error ends it.

    ``drain``: once it begins, the response under way says ``connection: close`` and the
    connection ends after it; a connection idle between requests ends at once."""
    closing = None if drain is None else (lambda: drain.draining)
    conn = H1ServerConnection(stream, h1_limits(limits), closing=closing)
    try:
        while True:
            if drain is not None:
                with drain.waiting() as idle:
                    await conn.wait_for_request(idle)
            try:
                head = await conn.next_request()
            except IsthmusError as exc:
                if router.observer is not None:  # 431, 400: counted and logged too
                    router.observer.rejected(exc, caller_site=local_site, caller_id=caller_id)
                await rescue_h1(conn, stream, exc, head_sent=False)
                return
            if head is None:
                return
            ctx = call_context(limits, local_site, caller_id)
            writer: H1ResponseWriter | None = None
            try:
                request = request_from_h1(head, scheme=scheme, target=target)
                if requested_upgrade(head) is not None:  # raises 501 for all but websocket
                    if await _serve_websocket(
                        conn, stream, router, websocket_request(request), ctx, limits
                    ):
                        return  # the connection carried the WebSocket to its end
                    if not conn.keep_alive:
                        return
                    continue
                if request.is_connect and target is not None:
                    raise BadRequest("CONNECT is not served on an HTTP service port")
                if request.is_connect:
                    upstream = await router.open_l4(request.authority, ctx)
                    try:
                        leftover = await conn.accept_connect()
                        if leftover:
                            await upstream.send_all(leftover)
                    except BaseException:
                        with trio.CancelScope(shield=True):
                            await trio.aclose_forcefully(upstream)
                        raise
                    await relay_l4(stream, upstream, limits, what="CONNECT")
                    return
                writer = H1ResponseWriter(conn)
                await router.forward(request, h1_body(conn, head), writer, ctx)
            except CallerGone as exc:
                log.debug("caller went away: %r", exc)  # nobody left to answer
                mark_failed(stream)
                return
            except IsthmusError as exc:
                log.debug("request failed: %r", exc)
                await rescue_h1(
                    conn, stream, exc, head_sent=writer is not None and writer.head_sent
                )
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.debug("caller went away: %r", exc)  # nobody left to answer
                mark_failed(stream)
                return
            except Exception as exc:
                log.exception("request failed unexpectedly")
                mark_failed(stream)  # a bug: never a clean ending, whatever was sent
                await rescue_h1(
                    conn, stream, exc, head_sent=writer is not None and writer.head_sent
                )
                return
            if not conn.keep_alive:
                return
    finally:
        with (
            trio.CancelScope(shield=True),
            trio.move_on_after(1.0),
            contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
        ):
            await conn.aclose()


async def _serve_websocket(
    conn: H1ServerConnection,
    stream: trio.abc.Stream,
    router: Router,
    request: Request,
    ctx: CallContext,
    limits: LimitsConfig,
) -> bool:
    """Carry a caller's WebSocket handshake; True if it switched (and has now ended).

    A refusal (the endpoint answered something other than 101) is relayed to the caller
    within the route deadline and the connection may carry further requests.
    """
    result = await router.open_websocket(request, ctx)
    relaying = False
    try:
        if not result.switched:
            with trio.move_on_at(ctx.deadline) as scope:
                await result.relay_refusal(H1ResponseWriter(conn))
            if scope.cancelled_caught:
                raise RouteTimeout("the refused upgrade's response did not end in time")
            return False
        leftover = await conn.accept_upgrade(encode_switch(result.response.headers))
        if leftover:
            await result.stream.send_all(leftover)
        relaying = True
    finally:
        if not relaying:
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(result.stream)
    await relay_l4(stream, result.stream, limits, what="WebSocket")  # closes result.stream
    return True
