"""A peer site as a cluster: requests, L4 and WebSocket tunnels as HTTP/2 streams on its link.

:class:`PeerCluster` is what the router walks for a peer site, beside the local cluster
(:mod:`gateway.cluster.local`); the functions below are its exits.

Theory of operation
-------------------
An L7 tunnel is one ordinary HTTP/2 request on the link's client-role connection.  Its header
block is the request's own (HTTP/2 semantics already, see :mod:`gateway.http.exchange`) with
every incoming ``isthmus-*`` header removed and this gateway's own added: the site the request
entered the overlay at, the caller's SPIFFE ID when it authenticated with one, and the
remaining deadline in milliseconds.  The request body is streamed in one task (``send_all`` per
piece, then trailers or END_STREAM) while the response is read in another, so a peer may
answer before the body ends (a 413, a redirect) and a slow peer slows the caller through
HTTP/2 flow control.  The response head is checked with the transcoding rules before anything
reaches the caller (a malformed head is a 502, never forwarded), its DATA is checked against a
declared Content-Length, and its trailers are carried on.

An L4 tunnel is a ``CONNECT`` stream (RFC 9113 section 8.5): ``:method CONNECT`` and
``:authority <l7-address>:<port>``.  Once the peer answers 200 the stream *is* the tunnel (an
``H2Stream`` is a ``trio.abc.HalfCloseableStream``); any other answer is a typed error.

A WebSocket is an extended CONNECT stream (RFC 8441): ``:method CONNECT``, ``:protocol
websocket``, ``:scheme``, ``:path``, ``:authority`` = the L7 address, and the caller's handshake
fields.  Only a peer that advertised SETTINGS_ENABLE_CONNECT_PROTOCOL gets one (links do).  A
200 with ``sec-websocket-accept`` means the endpoint behind the peer switched: its fields go
back to the caller in a 101 and the stream is the tunnel.  Anything else is the endpoint's
refusal, relayed as it is -- a 200 too: an endpoint may ignore ``Upgrade`` and just answer
the GET, and the destination strips ``sec-websocket-accept`` from every refusal, so the
two cannot be confused.

Cancellation and failures reset the stream (``aclose`` sends RST_STREAM CANCEL when our side
had not finished), so the peer stops work it can no longer deliver.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from discovery.model import ServiceName
from foundation.errors import H2_NO_ERROR, first_leaf
from gateway.cluster.errors import SiteDidNoWork
from gateway.cluster.fair_share import CallerShares, caller_key
from gateway.cluster.held_stream import HeldStream
from gateway.http.caller_side import CallerWriter, caller_body
from gateway.http.errors import UpstreamProtocolError
from gateway.http.exchange import (
    READ_SIZE,
    Body,
    CallContext,
    EmptyBody,
    Request,
    Response,
    ResponseWriter,
    UpgradeResult,
    no_refusal,
)
from gateway.http.held_body import held_whole
from gateway.http.message import Headers
from gateway.http.overlay_headers import (
    INTERNAL_HEADERS,
    decode_reason,
    encode_context,
    strip_request,
)
from gateway.http.transcode import (
    ContentLengthCounter,
    declared_content_length,
    h2_response_to_h1,
    h2_trailers_to_h1,
)
from gateway.http.websocket import ACCEPT_HEADER
from overlay.address import L7Address
from overlay.h2.stream import ConnectionGone, H2Stream, StreamReset
from overlay.peering.pool import StreamOpener

_BODYLESS_STATUS = frozenset({204, 304})
#: The port put in a CONNECT ``:authority`` when the caller named none (a service port's
#: target, an SNI name): HTTP/2 CONNECT needs one; the remote cluster picks the endpoint's
#: real port from its catalog.
DEFAULT_L4_PORT = 443


class TunnelRejected(SiteDidNoWork):
    """The peer answered a CONNECT with a status other than 200.

    502/503 mean the remote site could not reach an endpoint (``retry_elsewhere``: another
    site may); a 403 is the remote policy and stands, and is passed on as a 403.
    """

    def __init__(self, status: int, address: str) -> None:
        super().__init__(f"peer answered CONNECT {address} with {status}")
        self.status = status
        self.http_status = status if status in (403, 404, 502, 503, 504) else 502
        self.retry_elsewhere = status in (502, 503)


class NoExtendedConnect(SiteDidNoWork):
    """The peer did not advertise SETTINGS_ENABLE_CONNECT_PROTOCOL: it cannot carry a
    WebSocket, but another site may (nothing was sent)."""

    http_status = 501


class LinkUnavailable(SiteDidNoWork):
    """The link was closing or gone when the stream was to be opened: the peer never saw the
    request, so any request may go to another site (503)."""

    http_status = 503


async def _open(conn: StreamOpener, headers: Headers, *, end_stream: bool) -> H2Stream:
    try:
        return await conn.open_stream(headers, end_stream=end_stream)
    except ConnectionGone as exc:
        raise LinkUnavailable(f"link unavailable: {exc}") from exc


def tunnel_request_headers(
    request: Request, ctx: CallContext, *, local_site: str, now: float
) -> Headers:
    """The HTTP/2 header block of an L7 tunnel for ``request``."""
    clean = strip_request(request)
    return clean.h2_headers() + encode_context(ctx, local_site=local_site, now=now)


def _response_from(headers: list[tuple[bytes, bytes]]) -> Response:
    """Validate a peer's response head (502 if malformed); keep HTTP/2 semantics."""
    head = h2_response_to_h1(headers)  # raises UpstreamProtocolError on anything malformed
    regular = tuple(
        (n, v) for n, v in headers if not n.startswith(b":") and n not in INTERNAL_HEADERS
    )
    # The peer's HTTP/1.1 endpoint's own reason phrase (validated like any field value by
    # h2); an origin that answers an HTTP/2 caller drops it with the other internal fields.
    reason = decode_reason(headers)
    return Response(head.status, regular, reason)


async def _send_body(stream: H2Stream, body: Body) -> None:
    """Stream the request body onto the tunnel; trailers end it, else END_STREAM."""
    try:
        while True:
            piece = await body.receive_some(READ_SIZE)
            if not piece:
                break
            await stream.send_all(piece)
        trailers = body.trailers
        if trailers:
            await stream.send_trailers(list(trailers))
        else:
            await stream.send_eof()
    except StreamReset as exc:
        # The peer answered and then stopped our direction (RST NO_ERROR, RFC 9113 8.1):
        # the response stands; the rest of the request body is not wanted.
        if exc.error_code != H2_NO_ERROR:
            raise


def _complete_before_reset(stream: H2Stream, exc: StreamReset, taken: int) -> bool:
    """RFC 9113 section 8.1: a server may answer in full, then stop the request with
    RST_STREAM NO_ERROR.  The response is complete if END_STREAM had arrived and we had taken
    every byte received (the stream drops unread data when it is reset)."""
    stats = stream.statistics()
    return exc.error_code == H2_NO_ERROR and stats.remote_ended and stats.bytes_received == taken


async def _relay_response(stream: H2Stream, writer: ResponseWriter, *, head_request: bool) -> None:
    response = _response_from(await stream.response_headers())
    bodyless = head_request or response.status in _BODYLESS_STATUS
    counter = ContentLengthCounter(
        None if bodyless else declared_content_length(response.headers, UpstreamProtocolError),
        UpstreamProtocolError,
    )
    stats = stream.statistics()
    whole = getattr(writer, "send_whole", None)
    if (
        whole is not None
        and stats.remote_ended
        and stats.buffered == stats.bytes_received <= READ_SIZE
    ):
        # The whole response is already here: one write downstream instead of three.
        body = await stream.receive_some(READ_SIZE) if stats.buffered else b""
        counter.data(len(body))
        counter.end()
        trailers = stream.trailers
        await whole(
            response, body, h2_trailers_to_h1(trailers, from_upstream=True) if trailers else ()
        )
        return
    await writer.send_head(response)
    taken = 0
    while True:
        try:
            piece = await stream.receive_some(READ_SIZE)
        except StreamReset as exc:
            if not _complete_before_reset(stream, exc, taken):
                raise
            break
        if not piece:
            break
        taken += len(piece)
        counter.data(len(piece))
        await writer.send_data(piece)
    counter.end()
    trailers = stream.trailers
    await writer.send_end(h2_trailers_to_h1(trailers, from_upstream=True) if trailers else ())


async def forward_over_link(
    conn: StreamOpener,
    request: Request,
    body: Body,
    writer: ResponseWriter,
    ctx: CallContext,
    *,
    local_site: str,
    clock: Callable[[], float] = trio.current_time,
) -> None:
    """Forward ``request`` to the peer behind ``conn`` and relay its response to ``writer``.

    Raises ``ConnectionGone``/``StreamReset`` from the link (``StreamReset.refused``: the peer
    did no work), ``UpstreamProtocolError`` for a malformed response; errors after
    ``writer.send_head`` can only abort the response.
    """
    headers = tunnel_request_headers(request, ctx, local_site=local_site, now=clock())
    no_body = isinstance(body, EmptyBody)
    whole = None if no_body else held_whole(body)
    stream = await _open(conn, headers, end_stream=no_body)
    try:
        # A body held whole leaves with the HEADERS (no pass in between: one write), if the
        # window allows; else it is streamed like any other.
        if no_body or (whole and stream.send_final_now(whole)):
            await _relay_response(stream, writer, head_request=request.method == b"HEAD")
            return
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_send_body, stream, body)
                await _relay_response(stream, writer, head_request=request.method == b"HEAD")
                # The response is complete: a request body the peer never read is not wanted.
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # Re-raise the first real error as itself (callers match on types: StreamReset,
            # IncompleteBody...); a group of only Cancelled goes on whole to its cancel scope.
            first = first_leaf(group, skip=(trio.Cancelled,))
            if first is None:
                raise
            raise first  # noqa: B904 -- the group stays its context, as it always was
    finally:
        stream.close_now()


async def open_connect_tunnel(
    conn: StreamOpener,
    authority: bytes,
    ctx: CallContext,
    *,
    local_site: str,
    clock: Callable[[], float] = trio.current_time,
) -> H2Stream:
    """Open an L4 tunnel ``CONNECT authority`` (``<l7-address>:<port>``); return it at 200."""
    headers: Headers = (
        (b":method", b"CONNECT"),
        (b":authority", authority),
        *encode_context(ctx, local_site=local_site, now=clock()),
    )
    stream = await _open(conn, headers, end_stream=False)
    try:
        response = await stream.response_headers()
        status = dict(response).get(b":status", b"")
        if status != b"200":
            code = int(status) if status.isdigit() else 502
            raise TunnelRejected(code, authority.decode("ascii", "replace"))
    except BaseException:
        with trio.CancelScope(shield=True):
            await stream.aclose()
        raise
    return stream


async def open_websocket_tunnel(
    conn: StreamOpener,
    request: Request,
    ctx: CallContext,
    *,
    local_site: str,
    clock: Callable[[], float] = trio.current_time,
) -> UpgradeResult:
    """Carry the WebSocket ``request`` to the peer as an extended CONNECT (RFC 8441).

    Returns when the peer answered: 200 -> a ``101`` result whose stream is the tunnel;
    another status -> a refusal to relay.  A malformed answer is 502.
    """
    try:
        if not await conn.peer_accepts_extended_connect():
            raise NoExtendedConnect("the peer does not accept extended CONNECT (RFC 8441)")
    except ConnectionGone as exc:
        raise LinkUnavailable(f"link unavailable: {exc}") from exc
    headers = tunnel_request_headers(request, ctx, local_site=local_site, now=clock())
    stream = await _open(conn, headers, end_stream=False)
    try:
        response = _response_from(await stream.response_headers())
        if response.status == 200 and any(n == ACCEPT_HEADER for n, _ in response.headers):
            return UpgradeResult(Response(101, response.headers), stream, no_refusal)
    except BaseException:
        with trio.CancelScope(shield=True):
            await stream.aclose()
        raise

    async def relay_refusal(writer: ResponseWriter) -> None:
        await _relay_response(stream, writer, head_request=False)

    return UpgradeResult(response, stream, relay_refusal)


class PeerCluster:
    """A peer site seen as a cluster beside the local one: what the router asks of a site
    (``forward``, ``open_l4``, ``open_websocket``), carried as tunnels on ``conn``: the link's
    connection, or the peer's link pool (:mod:`overlay.peering.pool`), which puts each stream
    on the least loaded of the peer's links.

    ``address`` and ``port`` are the route being walked: the peer's cluster picks its own
    endpoints, so it is told the L7 address (a ``CONNECT`` needs a port too), not a service.
    ``shares``: the callers' shares of this peer's link slots; each stream holds one of its
    caller's for as long as it lives (None: unbounded).
    """

    __slots__ = ("address", "clock", "conn", "local_site", "port", "shares")

    def __init__(
        self,
        conn: StreamOpener,
        *,
        address: L7Address,
        port: int | None,
        local_site: str,
        clock: Callable[[], float] = trio.current_time,
        shares: CallerShares | None = None,
    ) -> None:
        self.conn = conn
        self.address = address
        self.port = port
        self.local_site = local_site
        self.clock = clock
        self.shares = shares

    async def _hold(self, ctx: CallContext) -> Callable[[], None]:
        if self.shares is None:
            return _nothing
        return await self.shares.hold(caller_key(ctx))

    async def forward(
        self,
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        *,
        service: ServiceName,
    ) -> None:
        release = await self._hold(ctx)
        try:
            # The caller's side failing raises CallerGone (no UpstreamError): a caller's
            # reset is neither the peer's failure nor one for the retry layer to retry.
            await forward_over_link(
                self.conn,
                request,
                caller_body(body),
                CallerWriter(writer),
                ctx,
                local_site=self.local_site,
                clock=self.clock,
            )
        finally:
            release()

    async def open_l4(
        self, ctx: CallContext, *, service: ServiceName
    ) -> trio.abc.HalfCloseableStream:
        target = b"%s:%d" % (str(self.address).encode(), self.port or DEFAULT_L4_PORT)
        release = await self._hold(ctx)
        try:
            stream = await open_connect_tunnel(
                self.conn, target, ctx, local_site=self.local_site, clock=self.clock
            )
        except BaseException:
            release()
            raise
        return stream if self.shares is None else HeldStream(stream, release)

    async def open_websocket(
        self, request: Request, ctx: CallContext, *, service: ServiceName
    ) -> UpgradeResult:
        release = await self._hold(ctx)
        try:
            result = await open_websocket_tunnel(
                self.conn, request, ctx, local_site=self.local_site, clock=self.clock
            )
        except BaseException:
            release()
            raise
        if self.shares is None:
            return result
        return UpgradeResult(
            result.response, HeldStream(result.stream, release), result.relay_refusal
        )


def _nothing() -> None:
    return None
