"""The local cluster: this site's own endpoints of a service, from the catalog.

Why one object: every request that ends in this site -- from a local caller, or handed over
by a peer gateway -- ends here, so picking an endpoint, speaking its protocol and enforcing
the deadline live in one place, and the callers (the origin-side router, the east-west
handler) only say *which service* and *which endpoints may be used* (``only``).

Theory of operation
-------------------
1. The candidates are the routable endpoints of the service in the latest catalog snapshot
   (healthy, reported by a usable source; sorted by key, so the order is deterministic),
   filtered by ``only`` (export consent, for a peer's request) and, for HTTP, by protocol.
2. :func:`~gateway.cluster.wrr.smooth_wrr` orders them by weight (smooth weighted round
   robin, one state per service); the first is the pick and the next
   ones are fallbacks *only* for a failed connect (at most ``MAX_CONNECT_ATTEMPTS``): nothing
   reached the endpoint, so trying another one cannot duplicate work.
3. The request is what the endpoint should see (:func:`~gateway.http.caller_headers.
   for_endpoint`): caller-sent ``x-isthmus-*`` removed, the caller headers (who, from which
   site, how long it waits) added when the service has them on.  Every request that reaches
   an endpoint passes here, so this is the one place that writes them.
4. HTTP goes through :mod:`gateway.upstream.endpoint_h1` or ``endpoint_h2`` as the endpoint's
   ``protocol`` says; an endpoint that speaks ``tcp``/``tls`` cannot take an HTTP request
   (502).  L4 (:meth:`LocalCluster.open_l4`) is a plain TCP connection to any endpoint.
5. The exchange runs under an :class:`~gateway.http.exchange_timer.ExchangeTimer`:
   ``ctx.deadline`` until the response head (then :class:`UpstreamTimeout`, 504), after it
   ``ctx.idle_timeout`` and ``ctx.max_deadline`` (then ``StreamTimeout``: the caller can
   only reset).  A streamed body is never cut by the route timeout.

Errors raised *before* ``writer.send_head`` that may be retried elsewhere (another site) are
:class:`~gateway.upstream.pool.UpstreamUnavailable` subclasses: :class:`NoHealthyEndpoint`
and :class:`~gateway.upstream.pool.EndpointConnectFailed`.  Anything else (a 502 from a
broken exchange, a 504) means the request may have reached an endpoint.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import trio

from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from discovery.watch import Watch
from foundation.errors import UpstreamError
from gateway.cluster.balancer import BalancerFor, default_balancer, hash_key
from gateway.cluster.health_checker import Failing
from gateway.cluster.locality import prefer_locality
from gateway.cluster.outlier import Outcome
from gateway.cluster.outlier_detector import OutlierDetector
from gateway.cluster.p2c import p2c
from gateway.cluster.ring import Ring, build_ring, hash64, ring_order
from gateway.cluster.routable_memo import RoutableMemo
from gateway.cluster.status_writer import StatusWriter
from gateway.cluster.wrr import WrrState, smooth_wrr
from gateway.http.caller_headers import CallerHeaderRules, for_endpoint
from gateway.http.caller_side import CallerWriter, caller_body
from gateway.http.exchange import Body, CallContext, Request, ResponseWriter, UpgradeResult
from gateway.http.exchange_timer import ExchangeTimer
from gateway.http.websocket import UpgradeNotSupported
from gateway.observe.record import note_endpoint
from gateway.upstream.endpoint_h1 import forward_h1
from gateway.upstream.endpoint_h2 import forward_h2
from gateway.upstream.pool import (
    EndpointConnectFailed,
    UpstreamPool,
    UpstreamUnavailable,
    open_tcp,
)
from gateway.upstream.websocket import upgrade_h1_endpoint

#: Endpoints tried per request when connects fail (each bounded by connect_timeout).
MAX_CONNECT_ATTEMPTS = 3
HTTP_PROTOCOLS = frozenset({"http1", "http2"})
#: The config's default: every service's endpoints get the caller headers.
ALL_CALLER_HEADERS = CallerHeaderRules()

EndpointFilter = Callable[[Endpoint], bool]
_NO_WRR: WrrState[tuple[str, int]] = WrrState()  # keyed by (address, port)


class NoHealthyEndpoint(UpstreamUnavailable):
    """The service has no routable endpoint here (503); safe to try another site."""

    http_status = 503


class ProtocolMismatch(UpstreamError):
    """The service's endpoints speak raw TCP/TLS, not HTTP (502)."""

    http_status = 502


class UpstreamTimeout(UpstreamError):
    """The request's deadline passed before the endpoint finished (504)."""

    http_status = 504


class LocalCluster:
    """Weighted round-robin forwarding to this site's endpoints (see the module docstring)."""

    def __init__(
        self,
        *,
        local_site: str,
        catalog: Watch[Catalog],
        pool: UpstreamPool,
        connect_timeout: float = 5.0,
        caller_headers: CallerHeaderRules = ALL_CALLER_HEADERS,
        clock: Callable[[], float] = trio.current_time,
        outlier: OutlierDetector | None = None,
        balancer_for: BalancerFor = default_balancer,
        locality: str = "",
        locality_min_healthy_percent: int = 70,
        failing: Watch[Failing] | None = None,
    ) -> None:
        self.local_site = local_site
        self.caller_headers = caller_headers
        self.catalog = catalog
        self.pool = pool
        self.connect_timeout = connect_timeout
        self._clock = clock
        #: Passive outlier detection: outcomes go in, ejected endpoints are left out.
        self.outlier = outlier if outlier is not None else OutlierDetector(clock=clock)
        self.balancer_for = balancer_for
        #: Endpoints active health checks found failing (key -> reason).
        self.failing = failing
        self.locality = locality
        self.locality_min_healthy_percent = locality_min_healthy_percent
        self._wrr: dict[ServiceName, WrrState[tuple[str, int]]] = {}
        self._rings: dict[ServiceName, Ring] = {}
        #: Requests in flight per endpoint, kept for least_request services only.
        self._in_flight: dict[tuple[str, int], int] = {}
        self._rng = random.Random()
        #: The catalog's answer per service, kept while it cannot change (routable_memo.py).
        self._routable = RoutableMemo()

    # -- choosing ---------------------------------------------------------------------------

    def endpoints(
        self, service: ServiceName, only: EndpointFilter | None = None
    ) -> tuple[Endpoint, ...]:
        """The routable endpoints of ``service`` now (filtered by ``only``)."""
        found = self.outlier.routable(
            service, self._routable.get(self.catalog.latest, service, self._clock())
        )
        if self.failing is not None and self.failing.latest:
            failing = self.failing.latest
            found = tuple(ep for ep in found if ep.key not in failing)
        if only is not None:
            found = tuple(ep for ep in found if only(ep))
        return found

    def has_endpoints(self, service: ServiceName, only: EndpointFilter | None = None) -> bool:
        """Whether ``service`` has a routable endpoint here right now."""
        return bool(self.endpoints(service, only))

    def _order(
        self,
        service: ServiceName,
        only: EndpointFilter | None,
        *,
        http: bool,
        request: Request | None = None,
        commit: bool = True,
    ) -> tuple[tuple[Endpoint, ...], bool]:
        """The endpoints to try, the pick first; and whether to count requests in flight.

        ``commit=False`` is a preview (:meth:`preview`): the balancer's state does not move."""
        candidates = self.endpoints(service, only)
        if not candidates:
            raise NoHealthyEndpoint(f"no healthy endpoint of {service} in site {self.local_site}")
        if http:
            speaking = tuple(ep for ep in candidates if ep.protocol in HTTP_PROTOCOLS)
            if not speaking:
                raise ProtocolMismatch(
                    f"the endpoints of {service} speak {candidates[0].protocol}, not HTTP"
                )
            candidates = speaking
        others: tuple[Endpoint, ...] = ()
        if self.locality:
            listed = sum(
                1
                for entry in self.catalog.latest.endpoints(service)
                if entry.endpoint.locality == self.locality
                and (only is None or only(entry.endpoint))
            )
            candidates, others = prefer_locality(
                candidates, self.locality, listed, self.locality_min_healthy_percent
            )
        choice = self.balancer_for(service)
        if choice.kind == "least_request":
            # A preview draws nothing (the same two first candidates each time): the pick of a
            # real request is random by design, the preview shows one such pick.
            r1, r2 = (self._rng.getrandbits(32), self._rng.getrandbits(32)) if commit else (0, 0)
            order = p2c(
                candidates,
                [self._in_flight.get((ep.address, ep.port), 0) for ep in candidates],
                [ep.weight for ep in candidates],
                r1,
                r2,
            )
            return (*order, *others)[:MAX_CONNECT_ATTEMPTS], True
        if choice.kind == "ring_hash" and request is not None:
            key = hash_key(request, choice)
            if key is not None:
                ring = self._ring(service, candidates)
                picks = ring_order(ring, hash64(key), MAX_CONNECT_ATTEMPTS)
                return (*(candidates[i] for i in picks), *others)[:MAX_CONNECT_ATTEMPTS], False
        order, state = smooth_wrr(
            candidates,
            [(ep.address, ep.port) for ep in candidates],
            [ep.weight for ep in candidates],
            self._wrr.get(service, _NO_WRR),
        )
        if commit:
            self._wrr[service] = state
        return (*order, *others)[:MAX_CONNECT_ATTEMPTS], False

    def preview(
        self,
        service: ServiceName,
        only: EndpointFilter | None = None,
        *,
        request: Request | None = None,
        http: bool = True,
    ) -> tuple[Endpoint, ...]:
        """The endpoints the next request would try, the pick first, without sending it.

        For ``isthmus explain``: the same choice as :meth:`forward` (catalog, ejections,
        failing health checks, export filter, locality, balancer) but nothing moves -- the
        round-robin state stays, no request is counted, no outcome is recorded.  Raises
        :class:`NoHealthyEndpoint` / :class:`ProtocolMismatch` as ``forward`` would.
        """
        return self._order(service, only, http=http, request=request, commit=False)[0]

    def set_balancers(self, balancer_for: BalancerFor) -> None:
        """Swap each service's balancer (a reload) for requests that start from now on; a
        request under way keeps the order it was given (and its in-flight count).

        Kept: a service's hash ring while it still balances by ring (the ring depends only on
        the endpoints and weights, so a changed hash key moves nothing), and its round-robin
        state unless it now balances by least request.  Requests already in flight are not
        counted for a service that turns to least request: the counts start from its next
        request."""
        self.balancer_for = balancer_for
        self._rings = {s: r for s, r in self._rings.items() if balancer_for(s).kind == "ring_hash"}
        self._wrr = {s: w for s, w in self._wrr.items() if balancer_for(s).kind != "least_request"}

    def balancer_kind(self, service: ServiceName) -> str:
        """The balancer ``service`` uses (``[[service_traffic]] lb``), for a trace."""
        return self.balancer_for(service).kind

    def _ring(self, service: ServiceName, candidates: tuple[Endpoint, ...]) -> Ring:
        """The service's ring, rebuilt only when its endpoints (or weights) changed."""
        names = tuple(f"{ep.address}:{ep.port}" for ep in candidates)
        weights = [ep.weight for ep in candidates]
        ring = self._rings.get(service)
        if ring is None or ring.names != names or ring.weights != tuple(weights):
            ring = build_ring(names, weights)
            self._rings[service] = ring
        return ring

    def _record(self, endpoint: Endpoint, outcome: Outcome) -> None:
        """Tell outlier detection how ``endpoint`` did (free for a success with no record)."""
        if outcome == "success" and self.outlier.health(endpoint.key) is None:
            return
        size = len(self._routable.get(self.catalog.latest, endpoint.service, self._clock()))
        self.outlier.record(endpoint, outcome, service_size=size)

    def _done(self, endpoint: Endpoint) -> None:
        slot = (endpoint.address, endpoint.port)
        left = self._in_flight.get(slot, 1) - 1
        if left > 0:
            self._in_flight[slot] = left
        else:
            self._in_flight.pop(slot, None)  # bounded: only endpoints with requests in flight

    def _connect_budget(self, deadline: float) -> float:
        return max(0.0, min(self.connect_timeout, deadline - self._clock()))

    # -- HTTP -------------------------------------------------------------------------------

    async def forward(
        self,
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        *,
        service: ServiceName,
        only: EndpointFilter | None = None,
    ) -> None:
        """Send ``request`` to an endpoint of ``service`` and stream the answer to ``writer``.

        Raises :class:`NoHealthyEndpoint` / ``EndpointConnectFailed`` before the head (safe
        to retry elsewhere), :class:`UpstreamTimeout` when ``ctx.deadline`` passes, other
        ``UpstreamError``/``DownstreamError`` subclasses for broken exchanges.
        """
        order, counted = self._order(service, only, http=True, request=request)
        request = for_endpoint(
            request, ctx, now=self._clock(), enabled=self.caller_headers.enabled(service)
        )
        timer = ExchangeTimer(ctx)
        # The caller's side failing (a reset, a closed connection) raises CallerGone, which
        # is no UpstreamError: it ends the exchange without counting against the endpoint.
        status = StatusWriter(timer.writer(CallerWriter(writer)))
        body = timer.body(caller_body(body))
        endpoint = order[0]
        with timer.scope as scope:
            failure: EndpointConnectFailed | None = None
            for endpoint in order:
                note_endpoint(endpoint.address, endpoint.port)  # the access line's endpoint
                forward = forward_h2 if endpoint.protocol == "http2" else forward_h1
                if counted:
                    slot = (endpoint.address, endpoint.port)
                    self._in_flight[slot] = self._in_flight.get(slot, 0) + 1
                try:
                    await forward(
                        self.pool,
                        endpoint,
                        request,
                        body,
                        status,
                        connect_timeout=self._connect_budget(ctx.deadline),
                    )
                except EndpointConnectFailed as exc:
                    self._record(endpoint, "connect_failure")
                    failure = exc
                    continue
                except UpstreamError:
                    self._record(endpoint, "5xx" if status.status is None else status.outcome())
                    raise
                finally:
                    if counted:
                        self._done(endpoint)
                self._record(endpoint, status.outcome())
                return
            assert failure is not None
            raise failure
        if scope.cancelled_caught:
            # The endpoint did not answer in time (a hung instance counts as failing).
            self._record(endpoint, "5xx" if status.status is None else status.outcome())
            cut = timer.expired(f"{service} in site {self.local_site}")
            if cut is not None:
                raise cut
            raise UpstreamTimeout(
                f"{service} in site {self.local_site} did not answer before the deadline"
            )

    # -- WebSocket --------------------------------------------------------------------------

    async def open_websocket(
        self,
        request: Request,
        ctx: CallContext,
        *,
        service: ServiceName,
        only: EndpointFilter | None = None,
    ) -> UpgradeResult:
        """Ask an HTTP/1.1 endpoint of ``service`` to switch ``request`` to WebSocket.

        The handshake (connect, request, the endpoint's answer) is bounded by
        ``ctx.deadline`` (504); the switched connection is then the caller's, like an L4
        tunnel's.  HTTP/2 endpoints would need RFC 8441 themselves: not supported (501).
        """
        order = tuple(
            ep
            for ep in self._order(service, only, http=True, request=request)[0]
            if ep.protocol == "http1"
        )
        if not order:
            raise UpgradeNotSupported(
                f"the endpoints of {service} speak HTTP/2; WebSocket needs an HTTP/1.1 endpoint"
            )
        request = for_endpoint(  # the handshake tells the endpoint its caller, as any request
            request, ctx, now=self._clock(), enabled=self.caller_headers.enabled(service)
        )
        with trio.move_on_at(ctx.deadline):
            failure: EndpointConnectFailed | None = None
            for endpoint in order:
                note_endpoint(endpoint.address, endpoint.port)
                try:
                    return await upgrade_h1_endpoint(
                        endpoint,
                        request,
                        connect_timeout=self._connect_budget(ctx.deadline),
                        limits=self.pool.h1_limits,
                    )
                except EndpointConnectFailed as exc:
                    self._record(endpoint, "connect_failure")
                    failure = exc
            assert failure is not None
            raise failure
        raise UpstreamTimeout(f"{service} in site {self.local_site} did not switch in time")

    # -- L4 ---------------------------------------------------------------------------------

    async def open_l4(
        self,
        ctx: CallContext,
        *,
        service: ServiceName,
        only: EndpointFilter | None = None,
    ) -> trio.SocketStream:
        """A TCP connection (``TCP_NODELAY``) to an endpoint of ``service``, weighted round robin.

        The connect is bounded by ``connect_timeout`` and ``ctx.deadline``; the connection
        itself is the caller's to keep as long as it likes.
        """
        order, _ = self._order(service, only, http=False)
        failure: EndpointConnectFailed | None = None
        for endpoint in order:
            budget = self._connect_budget(ctx.deadline)
            if budget <= 0:
                raise UpstreamTimeout(f"no time left to connect to {service}")
            note_endpoint(endpoint.address, endpoint.port)
            try:
                stream = await open_tcp(endpoint, connect_timeout=budget)
            except EndpointConnectFailed as exc:
                self._record(endpoint, "connect_failure")
                failure = exc
                continue
            self._record(endpoint, "success")
            return stream
        assert failure is not None
        raise failure
