"""The router: from a request's L7 address to a site, and on to the local cluster or a peer.

Theory of operation
-------------------
``forward`` (an :data:`~gateway.http.exchange.Upstream`), ``open_l4`` and ``open_websocket``
share one walk:

Steps 1-3 are :func:`gateway.router.decide.resolve`, shared with ``isthmus explain``
(:mod:`gateway.router.explain`), so a trace cannot drift from what the router does.  A caller
``[debug]`` allows may send ``x-isthmus-debug: trace`` to get that trace on the response head
(:mod:`gateway.router.debug`).

1. parse the authority as an L7 address of this mesh; anything else is a 404 that names it;
2. an address pinned to a site that is neither this one nor a configured peer is a 404
   (unknown site): no configuration change short of adding that peer could make it work,
   unlike a configured peer that is down (503);
3. ask the latest :class:`~overlay.peering.route_table.RouteView` for the sites that can serve
   it, in failover order (a pinned address yields at most its own site); none: 404 if no site
   knows the service at all, 503 if it is known but nothing healthy serves it;
4. try each site's cluster in turn: the local site is the local cluster, a peer site is a
   :class:`~gateway.cluster.peer.PeerCluster` of tunnels on its link (``outbound(site)``;
   ``None`` means the link is down: skipped at once);
5. a failure moves on to the next site only when :mod:`gateway.router.failover` says so
   (nothing of the body consumed, no response head sent, and the site did no work:
   :func:`did_no_work`, over the typed marker :class:`~gateway.cluster.errors.SiteDidNoWork`);
   otherwise it stands.  When every site failed that way the answer is 503 naming each.
6. with ``resilience`` (:mod:`gateway.router.retry`), HTTP requests are walked there instead:
   the same failover, plus retries within the service's budget, per-try timeouts and circuit
   breakers per service and site; L4 and WebSocket flows count against ``max_connections``.

The route to the response *head* is bounded by ``ctx.deadline`` (set by the listener at
``now + route_timeout``; never later than the router's own ``route_timeout`` from now, nor
than a caller's ``x-isthmus-deadline-ms``; an expired one is a 504 before any site is tried:
:mod:`gateway.http.deadline`);
running past it is a 504.  Once the head went out, a streamed body lives as long as bytes
move (``ctx.idle_timeout``), up to ``ctx.max_deadline``
(:class:`~gateway.http.exchange_timer.ExchangeTimer`).  ``open_l4`` bounds only the
set-up (connect, ``CONNECT`` answered): an established L4 tunnel lives as long as its bytes
flow.  ``open_websocket`` is the same walk for a WebSocket handshake: bounded until the
endpoint answered, then a tunnel like L4; a refusal (the endpoint answered something other
than 101) stands, it is the caller's answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from typing import Protocol, TypeVar

import trio

from discovery.model import ServiceName
from discovery.snapshot import Catalog
from discovery.watch import Watch
from foundation.errors import UpstreamError
from gateway.cluster.breaker import BreakerOpen
from gateway.cluster.errors import SiteDidNoWork
from gateway.cluster.fair_share import SiteShares
from gateway.cluster.peer import PeerCluster
from gateway.config.debug import DebugConfig
from gateway.http.caller_headers import without_kept
from gateway.http.deadline import CALLER_DEADLINE_HEADER, check_not_expired, from_caller
from gateway.http.exchange import (
    Body,
    CallContext,
    EmptyBody,
    Request,
    ResponseWriter,
    UpgradeResult,
)
from gateway.http.exchange_timer import ExchangeTimer
from gateway.http.message import IDEMPOTENT_METHODS, Headers
from gateway.observe.observer import Observer
from gateway.observe.record import ExchangeRecord
from gateway.router.cluster import Cluster
from gateway.router.debug import Explainer, TraceWriter, trace_field, wants_trace
from gateway.router.decide import LINK_DOWN, NoHealthySite, resolve
from gateway.router.failover import Attempt, describe, may_fail_over
from gateway.router.replica_order import attempt_order
from gateway.router.retry import Resilience
from gateway.routes.forward import Mirrors, RouteRules
from overlay.address import L7Address
from overlay.federation.import_ import ImportTable
from overlay.h2.stream import ConnectionGone, StreamReset
from overlay.peering.pool import StreamOpener
from overlay.peering.route_table import RouteView

T = TypeVar("T")


class RouteTimeout(UpstreamError):
    """The route did not complete within its deadline."""

    http_status = 504


class LocalCluster(Cluster, Protocol):
    """The local cluster also says whether it has endpoints (the default ``known``)."""

    def has_endpoints(self, service: ServiceName) -> bool: ...


class _TrackedBody:
    """The caller's body, noting whether any byte of it was handed to an upstream."""

    __slots__ = ("consumed", "inner")

    def __init__(self, inner: Body) -> None:
        self.inner = inner
        self.consumed = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        if data:
            self.consumed = True
        return data

    @property
    def trailers(self) -> Headers:
        return self.inner.trailers


def did_no_work(exc: BaseException, *, idempotent: bool = True, set_up: bool = False) -> bool:
    """True if ``exc`` shows the site did not act on the request (or acting twice is harmless).

    The typed marker :class:`~gateway.cluster.errors.SiteDidNoWork` decides first: a link
    already gone when the stream was to be opened, a ``CONNECT`` answered 502/503, no healthy
    endpoint or a failed connect.  ``set_up``: only a flow's set-up failed (an L4 tunnel or
    nothing of it moved yet), so any other failure may go elsewhere too.  A link that dies
    after the request went out (``ConnectionGone`` from a stream we had opened) leaves it
    unknown whether the peer acted: only an idempotent request (RFC 9110 section 9.2.2) is
    sent elsewhere then.
    """
    if isinstance(exc, SiteDidNoWork):
        return exc.retry_elsewhere
    if set_up:
        return True
    if isinstance(exc, StreamReset):
        return exc.refused
    if isinstance(exc, ConnectionGone):
        return idempotent
    return isinstance(exc, OSError)


def known_services(
    catalog: Watch[Catalog], imports: Watch[ImportTable]
) -> Callable[[ServiceName], bool]:
    """``Router(known=...)``: a service is known if the local catalog lists it (healthy or
    not) or any peer's imports carry it (fresh or stale)."""

    def known(service: ServiceName) -> bool:
        if service in catalog.latest.services:
            return True
        return any(service in peer.services for peer in imports.latest.peers.values())

    return known


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Router:
    """Routes requests and L4 flows by L7 address; see the module docstring."""

    def __init__(
        self,
        *,
        local_site: str,
        mesh_domain: str,
        routes: Watch[RouteView],
        outbound: Callable[[str], StreamOpener | None],
        local: LocalCluster,
        route_timeout: float = 15.0,
        clock: Callable[[], float] = trio.current_time,
        known: Callable[[ServiceName], bool] | None = None,
        peer_sites: Collection[str] | None = None,
        observer: Observer | None = None,
        caller_shares: SiteShares | None = None,
        debug: DebugConfig | None = None,
        explainer: Explainer | None = None,
        resilience: Resilience | None = None,
        replicas: Callable[[str], int] | None = None,
    ) -> None:
        """``known(service)``: does any site know the service, healthy or not (decides 404
        versus 503 when no site can serve)?  Use :func:`known_services`; the default (the
        local cluster has endpoints) answers 404 for a known service that is down.

        ``outbound(site)`` is ``Peering.outbound``; ``routes`` is ``Peering.routes``.
        ``peer_sites``: the configured peers' names; an address pinned to any other site
        (not this one) is a 404.  None skips that check (tests of other parts).
        ``observer``: metrics and access log of each request (None: not observed).
        ``caller_shares``: each caller's share of a peer's link slots (None: unbounded).
        ``debug``/``explainer``: who may ask for a request's trace, and how it is computed
        (:mod:`gateway.router.debug`; None: never traced).
        ``resilience``: retries, retry budgets and breakers per service (None: a failure
        only fails over, as :mod:`gateway.router.failover` says).
        ``replicas(site)``: a peer site's configured replicas, each a place to go before the
        next site (:mod:`gateway.router.replica_order`; None: one each)."""
        self.local_site = local_site
        self.mesh_domain = mesh_domain
        self.routes = routes
        self.outbound = outbound
        self.local = local
        self.route_timeout = route_timeout
        self.clock = clock
        self.known = known if known is not None else local.has_endpoints
        self.peer_sites = None if peer_sites is None else frozenset(peer_sites)
        self.observer = observer
        self.caller_shares = caller_shares
        self.debug = debug if debug is not None else DebugConfig()
        self.explainer = explainer
        self.resilience = resilience
        self.replicas = replicas
        #: ``[[routes]]`` (None: none configured); swapped whole by a reload.
        self.rules: RouteRules | None = None
        #: Where the routes' mirror copies run (served by the gateway's root nursery).
        self.mirrors = Mirrors()

    # -- addresses ---------------------------------------------------------------------------

    def resolve(self, authority: bytes) -> tuple[L7Address, int | None, tuple[str, ...]]:
        """The address, its port and the sites to try; raises UnknownAddress/NoHealthySite
        (:func:`gateway.router.decide.resolve`, which ``explain`` shares)."""
        found = resolve(
            authority,
            mesh_domain=self.mesh_domain,
            local_site=self.local_site,
            peer_sites=self.peer_sites,
            view=self.routes.latest,
            known=self.known,
        )
        return found.address, found.port, self._with_replicas(found.sites)

    def _with_replicas(self, sites: tuple[str, ...]) -> tuple[str, ...]:
        replicas = self.replicas
        return sites if replicas is None else attempt_order(sites, replicas, self.local_site)

    def _bounded(self, ctx: CallContext) -> CallContext:
        """``ctx`` with its deadline no later than ``now + route_timeout``."""
        deadline = self.clock() + self.route_timeout
        return ctx if ctx.deadline <= deadline else replace(ctx, deadline=deadline)

    def _cluster(self, site: str, address: L7Address, port: int | None) -> Cluster | None:
        """The cluster that serves ``site``: the local one, or the peer's behind its link
        (None: the link is down, the site is skipped at once)."""
        if site == self.local_site:
            return self.local
        conn = self.outbound(site)
        if conn is None:
            return None
        shares = None if self.caller_shares is None else self.caller_shares.for_site(site)
        return PeerCluster(
            conn,
            address=address,
            port=port,
            local_site=self.local_site,
            clock=self.clock,
            shares=shares,
        )

    async def _walk(
        self,
        address: L7Address,
        port: int | None,
        sites: tuple[str, ...],
        step: Callable[[Cluster], Awaitable[T]],
        may_retry: Callable[[BaseException], bool],
        rec: ExchangeRecord | None = None,
    ) -> T:
        """Try ``step`` on each site's cluster in turn until one succeeds; a failure moves on
        only when ``may_retry`` says so.  Every site failed: 503 naming each.  ``rec`` (an
        observed request) learns the site that answered and the sites skipped, and why."""
        attempts: list[Attempt] = []
        for site in sites:
            cluster = self._cluster(site, address, port)
            if cluster is not None and self.resilience is not None:
                cluster = self.resilience.flows(cluster, site)  # max_connections per flow
            if cluster is None:
                attempts.append(Attempt(site, LINK_DOWN))
                if rec is not None:
                    rec.tried.append((site, LINK_DOWN))
                continue
            if rec is not None:
                rec.site = site
            try:
                return await step(cluster)
            except (UpstreamError, OSError) as exc:
                if isinstance(exc, BreakerOpen):  # a full breaker answers at once
                    if rec is not None:
                        rec.breaker = exc.breaker
                    raise
                if not may_retry(exc):
                    raise
                attempts.append(Attempt(site, _reason(exc)))
                if rec is not None:
                    rec.tried.append((site, _reason(exc)))
        raise NoHealthySite(f"{address}: every site failed ({describe(attempts)})")

    # -- L7 ------------------------------------------------------------------------------------

    async def forward(
        self, request: Request, body: Body, writer: ResponseWriter, ctx: CallContext
    ) -> None:
        """Route ``request`` by its authority; the response goes to ``writer``."""
        observer = self.observer
        if observer is None:
            await self._routed(request, body, writer, ctx, None)
            return
        rec = observer.begin_origin(request, ctx)
        try:
            await self._routed(
                request,
                observer.body(rec, body),
                observer.writer(rec, writer),
                replace(ctx, request_id=rec.request_id),
                rec,
            )
        except BaseException as exc:
            observer.finish(rec, exc)
            raise
        observer.finish(rec)

    async def _routed(
        self,
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        rec: ExchangeRecord | None,
    ) -> None:
        """The hook of ``[[routes]]``: the route table decides first (:mod:`gateway.routes`),
        then hands the request -- perhaps with another address -- to :meth:`_forward`."""
        rules = self.rules
        if rules is None:
            await self._forward(request, body, writer, ctx, rec)
        else:
            await rules.forward(request, body, writer, ctx, rec, self._forward)

    async def _forward(
        self,
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        rec: ExchangeRecord | None,
    ) -> None:
        if self.explainer is not None and wants_trace(request, ctx, self.debug):
            writer = TraceWriter(writer, trace_field(await self.explainer(request, ctx)))
        address, port, sites = self.resolve(request.authority)
        now = self.clock()
        if any(name == CALLER_DEADLINE_HEADER for name, _ in request.headers):  # rare
            ctx = from_caller(request.headers, ctx, now=now)
            request = without_kept(request)  # read: the caller's budget goes no further
        ctx = self._bounded(ctx)
        check_not_expired(ctx, now=now, what=str(address))
        timer = ExchangeTimer(ctx)
        writer = timer.writer(writer)
        if self.resilience is not None:
            with timer.scope:
                await self.resilience.forward(
                    service=address.service_name,
                    sites=sites,
                    cluster_for=lambda site: self._cluster(site, address, port),
                    request=request,
                    body=body if isinstance(body, EmptyBody) else timer.body(body),
                    writer=writer,
                    ctx=ctx,
                    did_no_work=lambda exc: did_no_work(
                        exc, idempotent=request.method in IDEMPOTENT_METHODS
                    ),
                    what=str(address),
                    exhausted=NoHealthySite,
                    rec=rec,
                )
                return
            cut = timer.expired(str(address))
            if cut is not None:
                raise cut
            raise RouteTimeout(f"{address}: no response head within the route timeout")
        # An EmptyBody stays one (it can never be consumed): tunnels and endpoints test for it
        # to send the request head with END_STREAM, without a body task.
        tracked = body if isinstance(body, EmptyBody) else _TrackedBody(timer.body(body))
        service = address.service_name
        idempotent = request.method in IDEMPOTENT_METHODS

        async def step(cluster: Cluster) -> None:
            await cluster.forward(request, tracked, writer, ctx, service=service)

        def may_retry(exc: BaseException) -> bool:
            return may_fail_over(
                no_work_done=did_no_work(exc, idempotent=idempotent),
                head_sent=writer.head_sent,
                body_consumed=isinstance(tracked, _TrackedBody) and tracked.consumed,
            )

        with timer.scope:
            await self._walk(address, port, sites, step, may_retry, rec)
            return
        cut = timer.expired(str(address))
        if cut is not None:
            raise cut
        raise RouteTimeout(f"{address}: no response head within the route timeout")

    # -- L4 ------------------------------------------------------------------------------------

    async def open_l4(self, authority: bytes, ctx: CallContext) -> trio.abc.HalfCloseableStream:
        """Open a byte stream to the service named by ``authority`` (``<l7-address>[:port]``)."""
        observer = self.observer
        if observer is None:
            return await self._open_l4(authority, ctx, None)
        rec = observer.begin_tunnel(authority, ctx)
        try:
            opened = await self._open_l4(authority, replace(ctx, request_id=rec.request_id), rec)
        except BaseException as exc:
            observer.finish(rec, exc)
            raise
        return observer.tunnel(rec, opened, 200)

    async def _open_l4(
        self, authority: bytes, ctx: CallContext, rec: ExchangeRecord | None
    ) -> trio.abc.HalfCloseableStream:
        address, port, sites = self.resolve(authority)
        ctx = self._bounded(ctx)
        service = address.service_name

        async def step(cluster: Cluster) -> trio.abc.HalfCloseableStream:
            return await cluster.open_l4(ctx, service=service)

        def may_retry(exc: BaseException) -> bool:
            # Nothing of the flow has moved yet: any failed set-up may go elsewhere.
            return did_no_work(exc, set_up=True)

        with trio.move_on_at(ctx.deadline):
            return await self._walk(address, port, sites, step, may_retry, rec)
        raise RouteTimeout(f"{address}: tunnel not set up within the route timeout")

    # -- WebSocket -----------------------------------------------------------------------------

    async def open_websocket(self, request: Request, ctx: CallContext) -> UpgradeResult:
        """Ask the service named by ``request.authority`` to switch to WebSocket."""
        observer = self.observer
        if observer is None:
            return await self._open_websocket(request, ctx, None)
        rec = observer.begin_origin(request, ctx)
        try:
            result = await self._open_websocket(
                request, replace(ctx, request_id=rec.request_id), rec
            )
        except BaseException as exc:
            observer.finish(rec, exc)
            raise
        stream = observer.tunnel(rec, result.stream, result.response.status)
        return replace(result, stream=stream)

    async def _open_websocket(
        self, request: Request, ctx: CallContext, rec: ExchangeRecord | None
    ) -> UpgradeResult:
        address, port, sites = self.resolve(request.authority)
        ctx = self._bounded(ctx)
        service = address.service_name

        async def step(cluster: Cluster) -> UpgradeResult:
            return await cluster.open_websocket(request, ctx, service=service)

        # The handshake is a GET: idempotent, and no byte of the caller's flow has moved yet.
        with trio.move_on_at(ctx.deadline):
            return await self._walk(address, port, sites, step, did_no_work, rec)
        raise RouteTimeout(f"{address}: no WebSocket handshake within the route timeout")
