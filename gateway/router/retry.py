"""Retries, retry budgets and circuit breakers around the router's walk over sites.

Why here: the router knows the sites in failover order and the clusters behind them; this
module adds *when to try again* and *how much may be in flight* to that walk without the
clusters knowing.  The decisions are the pure cores -- :mod:`gateway.cluster.retry_policy`
(conditions, backoff), :mod:`gateway.cluster.retry_budget` (retries <= 20 % of requests plus a
small rate), :mod:`gateway.cluster.breaker` (ceilings per service and site) -- and this is the
thin Trio adapter.

Theory of operation
-------------------
One request runs as a sequence of *attempts*, each at one site:

1. **Failover** (unchanged): an attempt that shows the site did no work
   (:func:`~gateway.router.route.did_no_work`) moves on to the next site in failover order
   without counting as a retry, as long as nothing of the response went out and the body
   can still be sent (untouched, or kept for a replay).
2. **Retry**: a failure that matches the service's ``on`` conditions -- an exception
   classified by :func:`classify`, or a response head whose status matches, held back by
   :class:`_AttemptWriter` *before* it reaches the caller -- is tried again when all of these
   hold: fewer than ``max_retries`` so far, the body is replayable
   (:class:`~gateway.router.replay.ReplayBody`), time is left before the deadline, the
   retries breaker has room, and the service's budget grants one.  The check and the
   grant happen together with no ``await`` between.  After a full-jitter backoff the retry
   goes to the next site (wrapping) only for a safe method (GET, HEAD, OPTIONS, TRACE) or a
   failure where the site did no work; any other request is retried in the same site (the
   local cluster picks its next endpoint).
3. **Breakers**: each attempt holds ``requests`` (until the exchange ends) and
   ``pending_requests`` (until its response head) of its (service, site); a retry also holds
   ``retries``.  Over a ceiling the attempt is refused at once: :class:`BreakerOpen`, 503,
   naming the breaker.  A full ``retries`` breaker only stops the retry.
4. **Per-try timeout**: each attempt's bound to its response head is the earlier of the
   request's deadline and ``per_try_timeout_s`` from its start; passing it is a ``reset``
   failure (retried like one), never a cut response.

A response head that is not retried -- not matching, or the retry refused -- passes through
unchanged; a held head is never sent later, so a caller sees exactly one response.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import trio

from discovery.model import ServiceName
from foundation.errors import UpstreamError
from gateway.cluster.breaker import BreakerOpen, Breakers, Kind
from gateway.cluster.errors import SiteDidNoWork
from gateway.cluster.retry_budget import RetryBudget
from gateway.cluster.retry_policy import (
    SAFE_METHODS,
    Failure,
    RetryRules,
    backoff,
    failure_matches,
    next_site,
    status_matches,
)
from gateway.config.model import ServiceTrafficConfig
from gateway.config.resilience import BreakerConfig, RetryConfig
from gateway.http.deadline import DeadlineExpired
from gateway.http.exchange import (
    Body,
    CallContext,
    EmptyBody,
    Request,
    Response,
    ResponseWriter,
    send_whole_through,
)
from gateway.http.message import Headers
from gateway.observe.record import ExchangeRecord
from gateway.router.cluster import Cluster
from gateway.router.failover import Attempt, describe
from gateway.router.flow_breaker import BreakerCluster
from gateway.router.replay import ReplayBody
from gateway.upstream.pool import EndpointConnectFailed
from overlay.h2.stream import ConnectionGone, StreamReset

WILDCARD = "*"
#: Services whose budget is kept; past it the oldest is forgotten (a fresh budget is full).
MAX_BUDGETS = 10_000


class HeldForRetry(UpstreamError):
    """An attempt's response head matched a retry condition and a retry was granted: the
    head was held back (the caller never sees it) and the attempt ends here."""

    def __init__(self, status: int) -> None:
        super().__init__(f"the response was {status}; retried")
        self.status = status
        self.http_status = status


class AttemptTimeout(UpstreamError):
    """An attempt got no response head within ``per_try_timeout_s`` (504, a ``reset``)."""

    http_status = 504


class SiteCluster(Protocol):
    """What an attempt needs of a site's cluster (the router's ``Cluster``)."""

    async def forward(
        self,
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        *,
        service: ServiceName,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class ServicePolicy:
    """What one service's first matching ``[[service_traffic]]`` rule says about resilience."""

    rules: RetryRules
    retry: RetryConfig
    breakers: BreakerConfig


DEFAULT_POLICY = ServicePolicy(RetryRules.of(RetryConfig()), RetryConfig(), BreakerConfig())


def resilience_resolver(
    rules: Sequence[ServiceTrafficConfig],
) -> Callable[[ServiceName], ServicePolicy]:
    """Each service's policy: the first matching rule's ``retries``/``breakers`` (defaults
    when none matches), computed once per rule."""
    compiled = [
        (r.service, r.namespace, ServicePolicy(RetryRules.of(r.retries), r.retries, r.breakers))
        for r in rules
    ]

    def resolve(service: ServiceName) -> ServicePolicy:
        for name, namespace, policy in compiled:
            if name in (WILDCARD, service.name) and namespace in (WILDCARD, service.namespace):
                return policy
        return DEFAULT_POLICY

    return resolve


def classify(exc: BaseException) -> Failure:
    """What kind of failure ``exc`` was, for the ``on`` conditions (pure over the types)."""
    if isinstance(exc, (BreakerOpen, DeadlineExpired)):
        return "other"
    if isinstance(exc, StreamReset):
        return "refused-stream" if exc.refused else "reset"
    if isinstance(exc, EndpointConnectFailed):
        return "connect-failure"
    if isinstance(exc, SiteDidNoWork):
        # The link was gone when the stream was to be opened: nothing reached the site.
        return "connect-failure" if exc.retry_elsewhere and exc.http_status != 503 else "other"
    if isinstance(exc, (ConnectionGone, OSError, trio.BrokenResourceError, AttemptTimeout)):
        return "reset"
    if isinstance(exc, UpstreamError):
        if exc.http_status == 504:
            return "reset"  # no head in time: a timed-out attempt
        if exc.http_status in (502, 503):
            return "gateway-error"
    return "other"


class _AttemptWriter:
    """The caller's writer for one attempt: holds a retryable head back (raising
    :class:`HeldForRetry` into the attempt), and tells the attempt when its head went out."""

    __slots__ = ("_grant", "_on_head", "inner")

    def __init__(
        self,
        inner: ResponseWriter,
        grant: Callable[[int], bool] | None,
        on_head: Callable[[], None],
    ) -> None:
        self.inner = inner
        self._grant = grant
        self._on_head = on_head

    @property
    def head_sent(self) -> bool:
        return self.inner.head_sent

    def _check(self, response: Response) -> None:
        if self._grant is not None and self._grant(response.status):
            raise HeldForRetry(response.status)
        self._on_head()

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None:
        self._check(response)
        await self.inner.send_head(response, end_stream=end_stream)

    async def send_data(self, data: bytes) -> None:
        await self.inner.send_data(data)

    async def send_end(self, trailers: Headers = ()) -> None:
        await self.inner.send_end(trailers)

    async def send_whole(self, response: Response, body: bytes, trailers: Headers = ()) -> None:
        """Keeps the inner writer's one-write fast path (the forwarders look it up)."""
        self._check(response)
        await send_whole_through(self.inner, response, body, trailers)


class Resilience:
    """Retry budgets and breakers of one gateway, and the retrying walk (module docstring)."""

    def __init__(
        self,
        policy_for: Callable[[ServiceName], ServicePolicy],
        *,
        clock: Callable[[], float] = trio.current_time,
        rng: random.Random | None = None,
    ) -> None:
        self.policy_for = policy_for
        self.clock = clock
        self.rng = rng if rng is not None else random.Random()
        self.breakers = Breakers()
        self._budgets: dict[ServiceName, RetryBudget] = {}

    def flows(self, cluster: Cluster, site: str) -> BreakerCluster:
        """``cluster`` with its L4 and WebSocket flows counted against ``max_connections``."""
        return BreakerCluster(cluster, site, self.breakers, self._breaker_config)

    def _breaker_config(self, service: ServiceName) -> BreakerConfig:
        return self.policy_for(service).breakers

    def budget(self, service: ServiceName, policy: ServicePolicy) -> RetryBudget:
        """The service's budget (a new one when its rule changed or it was forgotten)."""
        budget = self._budgets.get(service)
        if budget is None or budget.config is not policy.retry.budget:
            if budget is None and len(self._budgets) >= MAX_BUDGETS:
                self._budgets.pop(next(iter(self._budgets)))
            budget = self._budgets[service] = RetryBudget(policy.retry.budget)
        return budget

    async def forward(
        self,
        *,
        service: ServiceName,
        sites: tuple[str, ...],
        cluster_for: Callable[[str], SiteCluster | None],
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        did_no_work: Callable[[BaseException], bool],
        what: str,
        exhausted: Callable[[str], BaseException],
        rec: ExchangeRecord | None = None,
    ) -> None:
        """Send ``request`` to the first site that takes it, retrying as the service's
        policy allows; raise the last failure, or ``exhausted(message)`` naming each site when
        every site did no work."""
        policy = self.policy_for(service)
        rules = policy.rules
        budget = self.budget(service, policy)
        budget.record_request(self.clock())
        # A body is kept for a replay only where a retry could use it (consumption is
        # tracked either way: a consumed body that is not kept cannot fail over either).
        keep = rules.max_body_bytes if rules.max_retries else 0
        replay = None if isinstance(body, EmptyBody) else ReplayBody(body, keep)
        safe = request.method in SAFE_METHODS
        attempts: list[Attempt] = []
        retries = 0
        i = 0
        hops = 0  # sites moved to by failover since the last retry
        while True:
            site = sites[i]
            # The wait before a retry after this attempt, drawn now so the grant can tell
            # whether the retry could still begin before the deadline.
            delay = backoff(rules, retries + 1, self.rng.random())

            def grant(
                failure_ok: bool, target: int, *, retries: int = retries, delay: float = delay
            ) -> bool:
                """Check and take a retry to ``sites[target]`` now (no await between)."""
                if not failure_ok or retries >= rules.max_retries:
                    return False
                if replay is not None and replay.consumed and not replay.replayable:
                    return False
                if writer.head_sent or self.clock() + delay >= ctx.deadline:
                    return False
                if not self.breakers.room(policy.breakers, service, sites[target], "retries"):
                    if rec is not None:
                        rec.retry_denied = "breaker"
                    return False
                if not budget.try_retry(self.clock()):
                    if rec is not None:
                        rec.retry_denied = "budget"
                    return False
                return True

            def grant_status(status: int, *, i: int = i) -> bool:
                # The site did work: a retry crosses to the next site only for a safe method.
                return grant(
                    status_matches(rules, status), next_site(i, len(sites), may_cross=safe)
                )

            cluster = cluster_for(site)
            failure: BaseException | None = None
            kind: Failure = "connect-failure"
            no_work = True
            granted = False
            if cluster is None:
                attempts.append(Attempt(site, "link down"))
                if rec is not None:
                    rec.tried.append((site, "link down"))
            else:
                if rec is not None:
                    rec.site = site
                try:
                    await self._attempt(
                        cluster,
                        site,
                        service,
                        policy,
                        request,
                        body if replay is None else replay.reader(),
                        _AttemptWriter(writer, grant_status if rules.on_status else None, _noop),
                        ctx,
                        replay,
                        is_retry=retries > 0,
                    )
                    return
                except HeldForRetry as exc:
                    failure, granted, no_work = exc, True, False
                except BreakerOpen as exc:
                    if rec is not None:
                        rec.breaker = exc.breaker
                    raise
                except (UpstreamError, OSError) as exc:
                    if writer.head_sent:
                        raise
                    failure = exc
                    kind = classify(exc)
                    no_work = did_no_work(exc)
                reason = f"{type(failure).__name__}: {failure}"
                attempts.append(Attempt(site, reason))
                if rec is not None and not granted:
                    rec.tried.append((site, reason))
            body_ok = replay is None or not replay.consumed or replay.replayable
            # 1. Failover: the site did no work and there is a next site in this pass.
            if not granted and no_work and body_ok and hops + 1 < len(sites):
                i, hops = (i + 1) % len(sites), hops + 1
                continue
            # 2. Retry.
            target = next_site(i, len(sites), may_cross=safe or no_work)
            if not granted:
                granted = grant(failure_matches(rules, kind), target)
            if not granted:
                if failure is None or (no_work and body_ok):
                    once = list(dict.fromkeys(attempts))  # a retried pass repeats them
                    raise exhausted(f"{what}: every site failed ({describe(once)})")
                raise failure
            retries += 1
            if rec is not None:
                rec.retries = retries
            await trio.sleep(delay)
            i, hops = target, 0

    async def _attempt(
        self,
        cluster: SiteCluster,
        site: str,
        service: ServiceName,
        policy: ServicePolicy,
        request: Request,
        body: Body,
        writer: _AttemptWriter,
        ctx: CallContext,
        replay: ReplayBody | None,
        *,
        is_retry: bool,
    ) -> None:
        """One attempt at ``site``, holding its breakers and bounded by the per-try timeout."""
        held: list[Kind] = []
        breakers = self.breakers
        kinds: tuple[Kind, ...] = _RETRY_KINDS if is_retry else _FIRST_KINDS
        try:
            for kind in kinds:
                breakers.admit(policy.breakers, service, site, kind)
                held.append(kind)
            per_try = policy.rules.per_try_timeout
            scope: trio.CancelScope | None = None
            attempt_ctx = ctx
            if per_try is not None:
                deadline = min(ctx.deadline, self.clock() + per_try)
                attempt_ctx = replace(ctx, deadline=deadline)
                scope = trio.CancelScope(deadline=deadline)

            def head() -> None:
                if "pending_requests" in held:
                    held.remove("pending_requests")
                    breakers.release(service, site, "pending_requests")
                if scope is not None:
                    scope.deadline = math.inf  # the per-try bound is to the head only
                if replay is not None:
                    replay.forget()  # no retry after a head: the kept body is not needed

            writer._on_head = head
            if scope is None:
                await cluster.forward(request, body, writer, attempt_ctx, service=service)
                return
            with scope:
                await cluster.forward(request, body, writer, attempt_ctx, service=service)
            if scope.cancelled_caught:
                raise AttemptTimeout(f"{service} in site {site}: no response head in time")
        finally:
            for kind in held:
                breakers.release(service, site, kind)


_FIRST_KINDS: tuple[Kind, ...] = ("requests", "pending_requests")
_RETRY_KINDS: tuple[Kind, ...] = ("retries", "requests", "pending_requests")


def _noop() -> None:
    return None
