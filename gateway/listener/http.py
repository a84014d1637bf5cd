"""The downstream HTTP listener: HTTP/1.1, h2c (prior knowledge), TLS with ALPN, proxy mode.

Theory of operation
-------------------
One accept loop (:func:`gateway.listener.tcp.serve_tcp`, capped at ``max_connections``).  Per
connection:

1. ``tls = true``: a TLS handshake (bounded by ``tls_handshake_timeout_s``) with this gateway's
   SVID, ALPN ``h2``/``http/1.1``, client certificate *optional*.  A caller that presents one
   must pass the SPIFFE per-trust-domain check (else the connection is closed) and becomes
   ``ctx.caller_id``; routing is never authorization, so nothing else (Host, SNI, a header)
   can set it.
2. The wire is chosen: ALPN ``h2``, or the HTTP/2 client preface as the first bytes (prior
   knowledge h2c), runs an HTTP/2 server connection; anything else is HTTP/1.1.  The peeked
   bytes are handed back through :class:`PrefixedStream`.
3. HTTP/1.1 ``Upgrade``: ``websocket`` is carried (:mod:`gateway.http.websocket`): the
   handshake is routed like an L4 tunnel (``router.open_websocket``, bounded by the route
   timeout); the endpoint's ``101`` goes back to the caller with its fields
   (``Sec-WebSocket-Accept``...), then bytes are relayed like ``CONNECT``'s; a refusal (any
   other status) is the caller's answer.  Every other upgrade (``h2c``, anything else) is
   501 and never forwarded; ``HTTP2-Settings`` is hop-by-hop and never honoured.
4. Each request becomes a :class:`~gateway.http.exchange.Request`: caller-set ``isthmus-*``
   headers are removed first (only gateways may set them), an absolute-form target is HTTP
   proxy mode (its authority is the route), ``CONNECT <l7-address>:<port>`` opens an L4 tunnel
   (``router.open_l4``) and splices the connection to it.  A ``CallContext`` carries the
   local site, the caller ID, the deadline to the response head ``now + route_timeout`` and
   the stream limits that apply after it (``stream_idle_timeout_s``,
   ``max_stream_duration_s``).
5. Errors become responses in one place (``error_response`` via ``send_error`` on HTTP/1.1,
   the same mapping as an HTTP/2 response); after a response head went out an error can only
   close the connection (HTTP/1.1) or reset the stream (HTTP/2).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import ssl
from dataclasses import replace

import trio

from foundation.errors import H2_INTERNAL_ERROR, H2_NO_ERROR, IsthmusError
from foundation.log_limit import LogLimiter
from foundation.spiffe_id import SpiffeId
from gateway.config.model import LimitsConfig, ListenerConfig
from gateway.http.exchange import INTERNAL_HEADERS, Body, CallContext, EmptyBody, Request
from gateway.http.h1 import H1Limits, H1ServerConnection
from gateway.http.h1_adapter import H1Body, H1ResponseWriter
from gateway.http.h2_adapter import H2ResponseWriter
from gateway.http.headers import (
    BadRequest,
    FramingKind,
    Headers,
    MalformedHeaders,
    RequestHead,
    error_response,
    request_framing,
    strip_connection_specific,
)
from gateway.http.transcode import (
    ContentLengthCounter,
    declared_content_length,
    h1_request_to_h2,
    h2_request_to_h1,
    parse_proxy_target,
)
from gateway.http.websocket import encode_switch, requested_upgrade, websocket_request
from gateway.listener.caller_stream import CallerStream, mark_failed
from gateway.listener.tcp import call_context, relay_l4, serve_tcp
from gateway.router.route import Router, RouteTimeout
from gateway.splice import PrefixedStream
from overlay.h2.connection import H2Connection
from overlay.h2.limits import H2Limits
from overlay.h2.stream import ConnectionGone, H2Stream
from overlay.identity.rotation import Identity
from overlay.identity.state import IdentityState
from overlay.identity.tls_context import _load_cert_chain, peer_chain_der
from overlay.identity.verify import verify_peer
from overlay.link.link import tls_rejection_cause
from overlay.link.tls_stream import TLSStream

log = logging.getLogger("isthmus.listener.http")

H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
ALPN_PROTOCOLS = ["h2", "http/1.1"]


# ---------------------------------------------------------------------------------------------
# Streams
# ---------------------------------------------------------------------------------------------


async def _peek_preface(stream: trio.abc.Stream, timeout_s: float) -> bytes:
    """Read until the bytes are (or cannot be) the HTTP/2 client preface."""
    buf = b""
    with trio.move_on_after(timeout_s):
        while len(buf) < len(H2_PREFACE) and H2_PREFACE.startswith(buf):
            data = await stream.receive_some(64 * 1024)
            if not data:
                break
            buf += bytes(data)
    return buf


# ---------------------------------------------------------------------------------------------
# TLS
# ---------------------------------------------------------------------------------------------


def build_downstream_context(state: IdentityState) -> ssl.SSLContext:
    """TLS 1.2+ server context for local callers: our SVID, optional client certificates
    anchored in any trusted bundle (then re-checked per trust domain), ALPN h2/http1.1, no
    session tickets (a resumed session carries no client chain to re-verify)."""
    from cryptography.hazmat.primitives import serialization

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_OPTIONAL
    ctx.check_hostname = False
    anchors = state.bundles.all_anchors()
    if anchors:
        pem = "".join(a.public_bytes(serialization.Encoding.PEM).decode() for a in anchors)
        ctx.load_verify_locations(cadata=pem)
    ctx.set_alpn_protocols(ALPN_PROTOCOLS)
    ctx.num_tickets = 0
    ctx.options |= ssl.OP_NO_TICKET
    _load_cert_chain(ctx, state.svid, state.key)
    return ctx


class DownstreamTls:
    """The downstream TLS context, rebuilt when the identity rotates (live connections keep
    the one they started with), and the log budget of rejected callers."""

    def __init__(self, identity: Identity) -> None:
        self.identity = identity
        self._cached: tuple[IdentityState, ssl.SSLContext] | None = None
        # A caller whose certificate is refused is logged once per cause per minute: a client
        # in a retry loop must neither flood the log nor be invisible.
        self.rejections = LogLimiter(window_s=60.0)

    def log_rejected(self, tcp: trio.SocketStream | CallerStream, exc: BaseException) -> None:
        cause, certificate = tls_rejection_cause(exc)
        try:
            host, port = tcp.socket.getpeername()[:2]
            addr = f"{host}:{port}"
        except OSError:
            addr = "?"
        level = logging.WARNING if certificate else logging.INFO
        what = "rejected TLS caller" if certificate else "TLS caller dropped"
        self.rejections.log(
            log, level, cause, "%s from %s: %s", what, addr, cause, now=trio.current_time()
        )

    def context(self) -> tuple[IdentityState, ssl.SSLContext]:
        state = self.identity.state
        if self._cached is None or self._cached[0] is not state:
            self._cached = (state, build_downstream_context(state))
        return self._cached


def caller_identity(stream: TLSStream[CallerStream], state: IdentityState) -> SpiffeId | None:
    """The SPIFFE ID of a caller that presented a certificate; raises PeerRejected if it does
    not verify against its own trust domain's bundle."""
    presented, verified = peer_chain_der(stream.ssl_object)
    if not presented:
        return None
    peer = verify_peer(
        presented,
        bundles=state.bundles,
        now=dt.datetime.now(dt.UTC),
        openssl_chain=verified,
        cache=state.verify_cache,
    )
    return peer.spiffe_id


# ---------------------------------------------------------------------------------------------
# HTTP/1.1
# ---------------------------------------------------------------------------------------------


def h1_limits(limits: LimitsConfig) -> H1Limits:
    return H1Limits(
        max_head_bytes=limits.max_header_bytes,
        max_headers=limits.max_headers,
        head_timeout_s=limits.header_timeout_s,
        idle_timeout_s=limits.idle_timeout_s,
    )


def request_from_h1(head: RequestHead, *, scheme: bytes, target: bytes | None = None) -> Request:
    """The internal request for an HTTP/1.1 head; ``target`` (a service port's L7 address)
    replaces whatever authority the caller named."""
    fields = tuple((n, v) for n, v in head.headers if n not in INTERNAL_HEADERS)
    if target is not None:
        path = head.target
        proxy = parse_proxy_target(head.method, head.target)
        if proxy is not None and head.method != b"CONNECT":
            path = proxy.path
        fields = ((b"host", target), *((n, v) for n, v in fields if n != b"host"))
        head = replace(head, target=path)
    head = replace(head, headers=fields)
    return request_from_h2_block(h1_request_to_h2(head, scheme=scheme))


def request_from_h2_block(block: Headers) -> Request:
    """A :class:`Request` from a validated HTTP/2 header block (pseudo-headers first)."""
    pseudo: dict[bytes, bytes] = {}
    regular: list[tuple[bytes, bytes]] = []
    for name, value in block:
        if name.startswith(b":"):
            pseudo[name] = value
        elif name not in INTERNAL_HEADERS and name != b"host":
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
) -> None:
    """Serve HTTP/1.1 requests on ``stream`` until the caller or an error ends it."""
    conn = H1ServerConnection(stream, h1_limits(limits))
    try:
        while True:
            try:
                head = await conn.next_request()
            except IsthmusError as exc:
                await conn.send_error(exc)
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
            except IsthmusError as exc:
                log.debug("request failed: %r", exc)
                if writer is not None and writer.head_sent:
                    mark_failed(stream)  # a response cut short: never a clean ending
                await conn.send_error(exc)
                return
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                log.debug("caller went away: %r", exc)  # nobody left to answer
                mark_failed(stream)
                return
            except Exception as exc:
                log.exception("request failed unexpectedly")
                mark_failed(stream)
                await conn.send_error(exc)
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


# ---------------------------------------------------------------------------------------------
# HTTP/2 (h2c prior knowledge, TLS + ALPN h2)
# ---------------------------------------------------------------------------------------------


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


async def _h2_answer_error(stream: H2Stream, writer: H2ResponseWriter, exc: BaseException) -> None:
    if writer.head_sent:
        code = exc.h2_error_code if isinstance(exc, IsthmusError) else H2_INTERNAL_ERROR
        stream.reset(code)
        return
    head, body = error_response(exc)
    headers = ((b":status", b"%d" % head.status), *strip_connection_specific(head.headers))
    await stream.send_headers(headers)
    await stream.send_all(body)
    await stream.send_eof()


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
        await _h2_answer_error(stream, writer, exc)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        stream.reset(H2_INTERNAL_ERROR)


def h2_limits(limits: LimitsConfig) -> H2Limits:
    return H2Limits(
        max_concurrent_streams=limits.h2_max_concurrent_streams,
        stream_window=limits.h2_stream_window,
        connection_window=limits.h2_connection_window,
        max_header_list_size=limits.h2_max_header_list_bytes,
    )


async def serve_h2_connection(
    stream: trio.abc.Stream,
    router: Router,
    *,
    limits: LimitsConfig,
    local_site: str,
    caller_id: SpiffeId | None = None,
) -> None:
    """Serve an HTTP/2 connection from a local caller until it closes."""

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
    await conn.serve()


# ---------------------------------------------------------------------------------------------
# The listener
# ---------------------------------------------------------------------------------------------


async def serve_http_connection(
    tcp: CallerStream,
    router: Router,
    *,
    tls: DownstreamTls | None,
    limits: LimitsConfig,
    local_site: str,
) -> None:
    """Serve one accepted connection: TLS (optional), then HTTP/2 or HTTP/1.1."""
    try:
        await _serve_http_connection(tcp, router, tls=tls, limits=limits, local_site=local_site)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        log.debug("caller connection broke: %r", exc)  # a reset caller is not an error of ours


async def _serve_http_connection(
    tcp: CallerStream,
    router: Router,
    *,
    tls: DownstreamTls | None,
    limits: LimitsConfig,
    local_site: str,
) -> None:
    stream: trio.abc.Stream = tcp
    caller_id: SpiffeId | None = None
    alpn: str | None = None
    if tls is not None:
        state, context = tls.context()
        ssl_stream = TLSStream(tcp, context, server_side=True)
        try:
            with trio.fail_after(limits.tls_handshake_timeout_s):
                await ssl_stream.do_handshake()
            caller_id = caller_identity(ssl_stream, state)
        except (trio.TooSlowError, trio.BrokenResourceError, IsthmusError) as exc:
            tls.log_rejected(tcp, exc)
            await trio.aclose_forcefully(ssl_stream)
            return
        alpn = ssl_stream.selected_alpn_protocol()
        stream = ssl_stream
    scheme = b"https" if tls is not None else b"http"
    if alpn == "h2":
        await serve_h2_connection(
            stream, router, limits=limits, local_site=local_site, caller_id=caller_id
        )
        return
    first = await _peek_preface(stream, limits.header_timeout_s)
    if not first:
        return
    wrapped = PrefixedStream(stream, first)
    if first.startswith(H2_PREFACE) and alpn is None:
        await serve_h2_connection(
            wrapped, router, limits=limits, local_site=local_site, caller_id=caller_id
        )
    else:
        await serve_h1_connection(
            wrapped,
            router,
            limits=limits,
            local_site=local_site,
            caller_id=caller_id,
            scheme=scheme,
        )


async def serve_http_listener(
    config: ListenerConfig,
    router: Router,
    *,
    identity: Identity | None,
    limits: LimitsConfig,
    local_site: str,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run an ``http`` listener until cancelled; ``started`` gets the bound port."""
    tls: DownstreamTls | None = None
    if config.tls:
        if identity is None:
            raise ValueError(f"listener {config.name}: tls = true needs the gateway identity")
        tls = DownstreamTls(identity)
        tls.context()  # fail at start-up, not on the first caller

    async def on_connection(tcp: CallerStream) -> None:
        await serve_http_connection(tcp, router, tls=tls, limits=limits, local_site=local_site)

    await serve_tcp(
        on_connection,
        host=str(config.address),
        port=config.port,
        max_connections=limits.max_connections,
        send_timeout=limits.send_timeout_s,
        task_status=task_status,
    )
