"""The destination half of a tunnel: a stream a peer gateway opened towards this site.

Why this shape: Peering authenticates the peer gateway (mTLS, SPIFFE, per trust domain) and
hands every non-federation stream to ``EastWestHandler(peer_site, stream)``.  From here on the
request is an ordinary HTTP/2 request whose ``:authority`` is an L7 address -- or a CONNECT to
``<l7-address>:<port>`` for an L4 tunnel -- and this module turns it into a call on the local
cluster, after checking that the peer may make it.  This module is the Trio adapter; the
decisions are pure: the header block (:mod:`gateway.inbound.request`), the ``isthmus-*``
context (:func:`gateway.http.overlay_headers.decode_context`) and the admission
(:mod:`gateway.inbound.admission`).

Theory of operation (one stream, in order; the first failure answers and ends the stream)
------------------------------------------------------------------------------------------
0. **A question, not a request**: a stream carrying the internal ``isthmus-explain`` field
   (``isthmus explain`` at the origin) is answered with this site's verdict and the endpoint
   it would choose (:mod:`gateway.inbound.explain_answer`): the same steps 1-5 below, then a
   preview of the pick; nothing is forwarded and nothing is counted or logged.  A question
   marked ``from-v1`` (``isthmus explain --from`` this site, asked at the peer) gets this
   site's whole trace instead (:mod:`gateway.inbound.explain_from_answer`: only for the
   peers ``[debug] explain_peers`` lists); any other version is a 400 answer.
1. **Header block**, strictly (:func:`~gateway.inbound.request.parse_request`):
   pseudo-headers, connection-specific fields, CR/LF/NUL, oversize ``:method``/``:path`` ->
   400 with a body saying why; nothing malformed is ever forwarded.
2. **Address**: ``:authority`` parsed with the mesh domain.  Pinned to another site -> 404
   (this gateway does not relay); not an L7 address -> 400.
3. **Context** (:mod:`gateway.http.overlay_headers`): the internal headers are trusted
   *here* because the peer is an authenticated gateway: ``isthmus-caller-site`` (default:
   the peer's site; any other site -> 403, since a request crosses one link and a peer
   vouches for its own callers only), ``isthmus-caller-id`` (a strict SPIFFE ID; malformed
   -> 400) and ``isthmus-deadline-ms`` (capped by ``route_timeout``; like it, it bounds the
   time to the response head only -- a streamed body is bounded by ``stream_idle_timeout``
   and ``max_stream_duration``).  ``from_peer`` is always the authenticated peer site, never
   a header.
4. **Export consent**: the peer reaches only endpoints exported to it
   (:func:`~overlay.federation.export.consents`).  A service with no endpoint exported to
   this peer is unknown to it -> 404.
5. **Policy**: :func:`gateway.policy.check` (default deny from other sites) -> 403.
6. **Forward**: CONNECT -> a TCP connection to an endpoint, ``:status 200``, then bytes are
   spliced both ways with half-close; a TCP error resets the stream (CONNECT_ERROR) and a
   stream reset closes the TCP connection with RST.  An extended CONNECT (``:protocol
   websocket``, RFC 8441; :mod:`gateway.http.websocket`) -> an HTTP/1.1 Upgrade to an
   endpoint, bounded by the deadline: its 101 becomes ``:status 200`` with the endpoint's
   fields, then the same splice; any other answer is relayed as it is.  Anything else ->
   :meth:`LocalCluster.forward` with the stream as body and response writer.

Errors become responses in :mod:`gateway.http.rescue`: before the response head the mapped
error response (404, 403, 502, 503, 504...) or, when this site did no work, REFUSED_STREAM;
after the head the stream is reset.
Every failure stays inside the stream: nothing here may take the link down.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence

import trio

from discovery.model import Endpoint, ServiceName
from foundation.errors import H2_CANCEL, H2_CONNECT_ERROR, IsthmusError, first_leaf
from gateway.cluster.local import LocalCluster
from gateway.config.model import PolicyConfig
from gateway.http.deadline import check_not_expired
from gateway.http.errors import UnknownAddress
from gateway.http.exchange import (
    Body,
    CallContext,
    Request,
    Response,
    ResponseWriter,
)
from gateway.http.h2_adapter import H2ResponseWriter, H2StreamBody
from gateway.http.overlay_headers import decode_context
from gateway.http.rescue import Reset, rescue_peer_stream
from gateway.http.websocket import websocket_request_from_h2
from gateway.inbound.admission import admit, exported_to
from gateway.inbound.explain_answer import (
    EXPLAIN_VERSION,
    MAX_ANSWER_BYTES,
    answer,
    is_question,
    question_version,
    send_json,
    verdict,
)
from gateway.inbound.request import is_extended_connect, parse_request
from gateway.observe.observer import Observer
from gateway.observe.record import ExchangeRecord
from gateway.relay import abort_on_close, splice
from gateway.router.explain_from import FROM_VERSION
from overlay.federation.config import ExportConfig
from overlay.h2.stream import H2Stream, StreamReset, TunnelError

log = logging.getLogger(__name__)


class EastWestHandler:
    """Serve the streams peers open towards this site (see the module docstring)."""

    def __init__(
        self,
        *,
        local_site: str,
        mesh_domain: str,
        cluster: LocalCluster,
        export_rules: Sequence[ExportConfig],
        policies: Sequence[PolicyConfig],
        route_timeout: float = 15.0,
        clock: Callable[[], float] = trio.current_time,
        tunnel_idle_timeout: float | None = 300.0,
        tunnel_buffer_bytes: int = 64 * 1024,
        stream_idle_timeout: float | None = 300.0,
        max_stream_duration: float | None = None,
        observer: Observer | None = None,
    ) -> None:
        self.local_site = local_site
        self.mesh_domain = mesh_domain
        self.cluster = cluster
        self.export_rules = tuple(export_rules)
        self.policies = tuple(policies)
        self.route_timeout = route_timeout
        self.tunnel_idle_timeout = tunnel_idle_timeout
        self.tunnel_buffer_bytes = tunnel_buffer_bytes
        self.stream_idle_timeout = stream_idle_timeout
        self.max_stream_duration = max_stream_duration
        self._clock = clock
        self.observer = observer
        #: Answers ``isthmus explain --from`` this site asked at a peer (None: not served).
        self.explain_from: Callable[[str, H2Stream], Awaitable[None]] | None = None

    async def __call__(self, peer_site: str, stream: H2Stream) -> None:
        if is_question(stream.request_headers):  # isthmus explain: not a request, not counted
            await self._answer(peer_site, stream)
            return
        observer = self.observer
        if observer is None:
            await self._serve(peer_site, stream, None)
            return
        rec = observer.begin_destination(peer_site, stream.request_headers)
        try:
            failure = await self._serve(peer_site, stream, rec)
        except BaseException as exc:
            observer.finish(rec, exc)
            raise
        observer.finish(rec, failure)

    async def _answer(self, peer_site: str, stream: H2Stream) -> None:
        """What this site would do with the request in the question (nothing is sent)."""
        raw = stream.request_headers
        version = question_version(raw)
        with contextlib.suppress(TunnelError, trio.BrokenResourceError, trio.ClosedResourceError):
            if version != EXPLAIN_VERSION:
                if version == FROM_VERSION and self.explain_from is not None:
                    await self.explain_from(peer_site, stream)
                    return
                shown = version.decode("ascii", "replace")[:16]
                why = f"this gateway does not answer {shown!r} questions"
                await send_json(stream, 400, {"error": why}, limit=MAX_ANSWER_BYTES)
                return
            await answer(
                stream,
                lambda: verdict(
                    raw,
                    peer_site=peer_site,
                    local_site=self.local_site,
                    mesh_domain=self.mesh_domain,
                    cluster=self.cluster,
                    export_rules=self.export_rules,
                    policies=self.policies,
                    now=self._clock(),
                    route_timeout=self.route_timeout,
                ),
            )

    async def _serve(
        self, peer_site: str, stream: H2Stream, rec: ExchangeRecord | None
    ) -> BaseException | None:
        """Serve one stream; the error it ended with (already answered), if any."""
        writer = H2ResponseWriter(stream, to_peer=True)
        out: ResponseWriter = writer
        body: Body = H2StreamBody(stream)
        if rec is not None and self.observer is not None:
            out, body = self.observer.writer(rec, writer), self.observer.body(rec, body)
        method = b""
        try:
            raw = stream.request_headers
            if is_extended_connect(raw):
                request = websocket_request_from_h2(raw)
            else:
                request = parse_request(raw)
            method = request.method
            ctx = decode_context(
                stream.request_headers,
                peer_site=peer_site,
                now=self._clock(),
                route_timeout=self.route_timeout,
                idle_timeout=self.stream_idle_timeout,
                max_duration=self.max_stream_duration,
            )
            # A deadline spent on the way here: 504 at once, the endpoint is not called.
            check_not_expired(
                ctx, now=self._clock(), what=request.authority.decode("ascii", "replace")
            )
            service = admit(
                request,
                ctx,
                peer_site=peer_site,
                local_site=self.local_site,
                mesh_domain=self.mesh_domain,
                catalog=self.cluster.catalog.latest,
                export_rules=self.export_rules,
                policies=self.policies,
            )
            only = exported_to(self.export_rules, peer_site)

            if request.is_websocket:
                await self._websocket(stream, out, request, ctx, service, only, rec)
            elif request.is_connect:
                await self._connect(stream, out, ctx, service, only, rec)
            else:
                await self.cluster.forward(request, body, out, ctx, service=service, only=only)
        except StreamReset as exc:
            if stream.finished:
                return exc  # the peer gave up on this stream: nobody is left to answer
            # an HTTP/2 endpoint reset *its* stream: answer the peer (502) or reset
            await self._fail(stream, writer, exc, head_only=method == b"HEAD")
            return exc
        except IsthmusError as exc:
            await self._fail(stream, writer, exc, head_only=method == b"HEAD")
            return exc
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            await self._fail(stream, writer, exc, head_only=method == b"HEAD")
            return exc
        except Exception as exc:  # a bug must cost this stream, never the link
            log.exception("east-west stream from %s failed", peer_site)
            await self._fail(stream, writer, exc, head_only=method == b"HEAD")
            return exc
        return None

    async def _connect(
        self,
        stream: H2Stream,
        writer: ResponseWriter,
        ctx: CallContext,
        service: ServiceName,
        only: Callable[[Endpoint], bool],
        rec: ExchangeRecord | None,
    ) -> None:
        tcp = await self.cluster.open_l4(ctx, service=service, only=only)
        try:
            await writer.send_head(Response(200, ()))
            await self._tunnel(stream, tcp, service, rec)
        finally:
            await trio.aclose_forcefully(tcp)

    async def _websocket(
        self,
        stream: H2Stream,
        writer: ResponseWriter,
        request: Request,
        ctx: CallContext,
        service: ServiceName,
        only: Callable[[Endpoint], bool],
        rec: ExchangeRecord | None,
    ) -> None:
        result = await self.cluster.open_websocket(request, ctx, service=service, only=only)
        try:
            if not result.switched:
                with trio.move_on_at(ctx.deadline) as scope:
                    await result.relay_refusal(writer)
                if scope.cancelled_caught:
                    stream.reset(H2_CANCEL)
                return
            await writer.send_head(Response(200, result.response.headers))
            await self._tunnel(stream, result.stream, service, rec)
        finally:
            await trio.aclose_forcefully(result.stream)

    async def _tunnel(
        self,
        stream: H2Stream,
        other: trio.abc.HalfCloseableStream,
        service: ServiceName,
        rec: ExchangeRecord | None,
    ) -> None:
        """Splice the stream with an endpoint connection until both directions end.  Any
        failure resets the side that did not fail (the owner then closes ``other``)."""
        if rec is not None and self.observer is not None:
            other = self.observer.count(rec, other)  # bytes each way, for the access line
        clean = False
        try:
            await splice(
                stream,
                other,
                read_size=self.tunnel_buffer_bytes,
                idle_timeout=self.tunnel_idle_timeout,
            )
            clean = True
        except Exception as exc:  # splice's nurseries may wrap the cause in groups
            cause = first_leaf(exc) or exc
            if isinstance(cause, StreamReset):
                return  # the peer reset the tunnel: the endpoint gets a reset (finally)
            # RFC 9113 section 8.5: a TCP error (or an idle tunnel) -> CONNECT_ERROR.
            log.debug("tunnel to %s ended: %r", service, cause)
            stream.reset(H2_CONNECT_ERROR)
        finally:
            if not clean:
                abort_on_close(other)

    async def _fail(
        self,
        stream: H2Stream,
        writer: H2ResponseWriter,
        exc: BaseException,
        *,
        head_only: bool,
    ) -> None:
        """Answer with the mapped error if no head went out yet, else reset the stream
        (:func:`gateway.http.rescue.rescue_peer_stream`)."""
        before_head = not writer.head_sent
        action = await rescue_peer_stream(stream, writer, exc, head_only=head_only)
        if before_head and isinstance(action, Reset):
            log.debug("east-west: refusing stream: %s", exc)
        elif before_head and isinstance(exc, UnknownAddress):
            log.debug("east-west: %s", exc)
