"""The Trio adapter that carries out a route's decision, in front of the router's own walk.

Theory of operation
-------------------
The router hands every L7 request to :meth:`RouteRules.forward` with ``unrouted`` (its own
forwarding: address -> sites in failover order -> cluster).  Here, in order:

1. the authority is parsed; one that is not an address of this mesh, or whose address has no
   route, or whose routes all miss, goes to ``unrouted`` unchanged: today's behaviour;
2. the route's **rate limit** takes a token from the caller's bucket (key: caller SPIFFE ID,
   origin site, a header's value, or the route) -- none left: :class:`RateLimited`, a 429
   with ``Retry-After`` (:mod:`gateway.http.rescue` answers it);
3. the route's **fault**, for its share of the requests (only those carrying its header, when
   it names one): a delay (bounded by the request's deadline), then an answer with the abort
   status, or a reset (:class:`ResetInstead`);
4. a **direct response** is written and the exchange ends;
5. otherwise a **backend** is drawn by weight and the request goes on to ``unrouted`` with
   the backend's L7 address as its authority (so a backend in another site is an ordinary
   request to that site: its gateway applies its own policy and exports), the request header
   edits and path-prefix rewrite applied, the response header edits wrapped around the
   writer, and the route's timeouts tightening the context's;
6. a **mirror** copy is started in :class:`Mirrors`' nursery, fire-and-forget: capped in
   flight (over the cap it is dropped), bounded by its own timeout, its answer discarded, its
   failure only counted.  A body-less request's copy starts before the main request; a
   body is streamed to the main request as always, through a :class:`TeeBody` that keeps a
   bounded copy (``mirror.max_body_bytes``, ``[limits] mirror_buffer_budget``), and the copy
   starts once the whole body was read -- a body over the bounds is simply not mirrored.

A route is applied once: a backend's address is not matched against routes again, so routes
cannot loop.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any

import trio

from gateway.config.model import GatewayConfig
from gateway.config.routes import HeaderEdits, RouteConfig
from gateway.http.errors import RateLimited, ResetInstead
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
from gateway.routes.buckets import TokenBuckets
from gateway.routes.mirror_copy import BodyCopy, admit, declared_length
from gateway.routes.mirrors import DiscardWriter, HeldBody, Mirrors, TeeBody
from gateway.routes.table import CompiledRoute, RouteTable, compile_routes, view_of
from overlay.address import AddressError, parse_authority_cached

log = logging.getLogger(__name__)

__all__ = ["Forward", "Mirrors", "RouteRules", "rules_for"]

Forward = Callable[
    [Request, Body, ResponseWriter, CallContext, ExchangeRecord | None], Awaitable[None]
]


def edit_headers(headers: Headers, remove: frozenset[bytes], add: Headers) -> Headers:
    """``headers`` without the ``remove`` names (and those of ``add``), then ``add``."""
    if not remove and not add:
        return headers
    drop = remove | {name for name, _ in add}
    return tuple((n, v) for n, v in headers if n not in drop) + add


class _Edits:
    __slots__ = ("add", "remove")

    def __init__(self, edits: HeaderEdits) -> None:
        self.remove = frozenset(n.encode() for n in edits.remove)
        self.add: Headers = tuple((n.encode(), v.encode()) for n, v in edits.add.items())

    def __bool__(self) -> bool:
        return bool(self.remove or self.add)

    def apply(self, headers: Headers) -> Headers:
        return edit_headers(headers, self.remove, self.add)


class _EditedWriter:
    """The response's head gets the route's response header edits."""

    def __init__(self, inner: ResponseWriter, edits: _Edits) -> None:
        self.inner = inner
        self.edits = edits

    @property
    def head_sent(self) -> bool:
        return self.inner.head_sent

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None:
        edited = replace(response, headers=self.edits.apply(response.headers))
        await self.inner.send_head(edited, end_stream=end_stream)

    async def send_data(self, data: bytes) -> None:
        await self.inner.send_data(data)

    async def send_end(self, trailers: Headers = ()) -> None:
        await self.inner.send_end(trailers)

    async def send_whole(self, response: Response, body: bytes, trailers: Headers = ()) -> None:
        """Keep the inner writer's one-write fast path (``getattr`` by the forwarders): a
        wrapper without it would cost every small response that path."""
        edited = replace(response, headers=self.edits.apply(response.headers))
        await send_whole_through(self.inner, edited, body, trailers)


class _Actions:
    """A route's per-route state and pre-encoded actions (built with the table)."""

    __slots__ = ("buckets", "config", "request_edits", "response_edits")

    def __init__(self, route: RouteConfig) -> None:
        self.config = route
        limit = route.rate_limit
        self.buckets = (
            None
            if limit is None
            else TokenBuckets(rate=limit.requests_per_s, burst=limit.burst, max_keys=limit.max_keys)
        )
        self.request_edits = _Edits(route.request_headers)
        self.response_edits = _Edits(route.response_headers)


def _bucket_key(route: RouteConfig, request: Request, ctx: CallContext) -> bytes:
    assert route.rate_limit is not None
    key = route.rate_limit.key
    if key == "caller_id":
        return b"" if ctx.caller_id is None else str(ctx.caller_id).encode()
    if key == "caller_site":
        return ctx.caller_site.encode()
    if key == "header":
        name = (route.rate_limit.header or "").encode()
        return next((v for n, v in request.headers if n == name), b"")
    return b""


def fault_kind(reset: bool, abort_status: int | None) -> str:
    """What an injected fault did, for ``isthmus_faults_injected_total`` (a delay followed by
    an abort counts as the abort)."""
    return "reset" if reset else "abort" if abort_status is not None else "delay"


async def write_direct(
    writer: ResponseWriter, status: int, body: bytes, content_type: bytes, *, head_only: bool
) -> None:
    headers: Headers = (
        (b"content-type", content_type),
        (b"content-length", b"%d" % len(body)),
    )
    if head_only or not body:
        await writer.send_head(Response(status, headers), end_stream=True)
        return
    await writer.send_head(Response(status, headers))
    await writer.send_data(body)
    await writer.send_end()


class RouteRules:
    """The compiled ``[[routes]]`` of one config, with their rate-limit state."""

    def __init__(
        self,
        table: RouteTable,
        *,
        mesh_domain: str,
        mirrors: Mirrors,
        clock: Callable[[], float] = trio.current_time,
        draw: Callable[[], float] = random.random,
        previous: RouteRules | None = None,
    ) -> None:
        """``previous``: the rules these replace; a route compiled once and kept (the same
        :class:`CompiledRoute` object, e.g. every local route when only imported routes
        changed) keeps its rate-limit buckets."""
        self.table = table
        self.mesh_domain = mesh_domain
        self.mirrors = mirrors
        self.clock = clock
        self.draw = draw
        # ``previous`` is alive here, so an id it knows is one of its own, still live routes.
        old: dict[int, _Actions] = previous._actions if previous is not None else {}
        self._actions: dict[int, _Actions] = {
            id(route): old.get(id(route)) or _Actions(route.config)
            for routes in table.by_address.values()
            for route in routes
        }

    @classmethod
    def build(
        cls, routes: tuple[RouteConfig, ...], *, mesh_domain: str, mirrors: Mirrors, **kw: Any
    ) -> RouteRules:
        return cls(
            compile_routes(routes, mesh_domain), mesh_domain=mesh_domain, mirrors=mirrors, **kw
        )

    def decide(self, request: Request, ctx: CallContext) -> CompiledRoute | None:
        """The route that takes ``request``, or None (not an address here, or no match)."""
        try:
            address, _ = parse_authority_cached(
                request.authority.decode("ascii", "replace"), mesh_domain=self.mesh_domain
            )
        except AddressError:
            return None
        key = (address.service, address.namespace, address.site)
        if key not in self.table.by_address:
            return None
        view = view_of(
            request.method, request.path, request.headers, ctx.caller_id, ctx.caller_site
        )
        return self.table.match(key, view)

    async def forward(
        self,
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        rec: ExchangeRecord | None,
        unrouted: Forward,
    ) -> None:
        route = self.decide(request, ctx)
        if route is None:
            await unrouted(request, body, writer, ctx, rec)
            return
        if rec is not None:
            rec.route = route.label  # the access line's and the metrics' ``route``
        actions = self._actions[id(route)]
        config = actions.config
        if actions.buckets is not None:
            wait = actions.buckets.take(_bucket_key(config, request, ctx), self.clock())
            if wait:
                raise RateLimited(f"{route.label}: rate limit reached", retry_after_s=wait)
        head_only = request.method == b"HEAD"
        fault = config.fault
        if fault is not None and self._faulted(fault.percent, fault.header, request):
            if rec is not None:
                rec.fault = fault_kind(fault.abort_reset, fault.abort_status)
            if fault.delay_ms:
                await trio.sleep_until(min(self.clock() + fault.delay_ms / 1000, ctx.deadline))
            if fault.abort_reset:
                raise ResetInstead(f"{route.label}: fault injected (reset)")
            if fault.abort_status is not None:
                body_text = f"fault injected by route {route.label}\n".encode()
                await write_direct(
                    writer, fault.abort_status, body_text, b"text/plain", head_only=head_only
                )
                return
        direct = config.direct_response
        if direct is not None:
            await write_direct(
                writer,
                direct.status,
                direct.body.encode(),
                direct.content_type.encode(),
                head_only=head_only,
            )
            return
        routed = self._rewrite(route, actions, request)
        ctx = self._timeouts(config, ctx)
        if actions.response_edits:
            writer = _EditedWriter(writer, actions.response_edits)
        if config.mirror is None:
            await unrouted(routed, body, writer, ctx, rec)
            return
        tee = self._mirror(route, config, routed, body, ctx, unrouted)
        if tee is None:
            await unrouted(routed, body, writer, ctx, rec)
            return
        try:
            await unrouted(routed, tee, writer, ctx, rec)
        finally:
            tee.abandon()

    def _faulted(self, percent: float, header: str | None, request: Request) -> bool:
        if header is not None:
            name = header.encode()
            if not any(n == name for n, _ in request.headers):
                return False
        return self.draw() * 100 < percent

    def _rewrite(self, route: CompiledRoute, actions: _Actions, request: Request) -> Request:
        hosts = route.hosts
        # No draw unless there is a choice (one backend, or none: the address itself).
        host = None if not hosts else hosts[0] if len(hosts) == 1 else route.pick(self.draw())
        authority = request.authority
        if host is not None:
            _, colon, port = authority.rpartition(b":")
            authority = host + (b":" + port if colon and port.isdigit() else b"")
        path = request.path
        if route.strip_prefix is not None and route.config.rewrite_prefix is not None:
            path = route.config.rewrite_prefix.encode() + path[len(route.strip_prefix) :]
        headers = actions.request_edits.apply(request.headers)
        if authority == request.authority and path == request.path and headers is request.headers:
            return request
        return replace(request, authority=authority, path=path, headers=headers, h1_head=None)

    def _timeouts(self, config: RouteConfig, ctx: CallContext) -> CallContext:
        t = config.timeouts
        if t.response_head_s is None and t.idle_s is None:
            return ctx
        deadline = ctx.deadline
        if t.response_head_s is not None:
            deadline = min(deadline, self.clock() + t.response_head_s)
        idle = ctx.idle_timeout if t.idle_s is None else t.idle_s
        return replace(ctx, deadline=deadline, idle_timeout=idle)

    def _mirror(
        self,
        route: CompiledRoute,
        config: RouteConfig,
        request: Request,
        body: Body,
        ctx: CallContext,
        unrouted: Forward,
    ) -> TeeBody | None:
        """Start the mirror copy of a body-less request; for one with a body, the tee that
        starts it once the body was read (None: not mirrored, or nothing to tee)."""
        mirror = config.mirror
        assert mirror is not None and route.mirror_host is not None
        if self.draw() * 100 >= mirror.percent:
            return None
        _, colon, port = request.authority.rpartition(b":")
        authority = route.mirror_host + (b":" + port if colon and port.isdigit() else b"")
        copy = replace(request, authority=authority, h1_head=None)
        mirrors = self.mirrors
        timeout_s = mirror.timeout_s
        # The copy's own bounds, never the caller's: it starts when the caller's body has
        # been read (the caller's deadline may be close by then) and ends at its timeout.
        clock = self.clock

        def start(held: Body, done: Callable[[], None] | None) -> None:
            async def run() -> None:
                end = clock() + timeout_s
                own = replace(ctx, deadline=end, max_deadline=end)
                await unrouted(copy, held, DiscardWriter(), own, None)

            mirrors.spawn(route.label, mirror.max_in_flight, run, timeout_s=timeout_s, done=done)

        if isinstance(body, EmptyBody):
            start(body, None)
            return None
        declared = declared_length(request.headers)
        refused = admit(declared, mirror.max_body_bytes)
        if refused is not None:
            mirrors.note_drop(refused)
            return None

        def complete(kept: BodyCopy) -> None:
            start(HeldBody(kept.pieces(), kept.trailers), kept.release)

        held = BodyCopy(mirror.max_body_bytes, mirrors.budget, declared)
        return TeeBody(body, held, mirrors, complete)


def rules_for(config: GatewayConfig, mirrors: Mirrors) -> RouteRules | None:
    """The router's rules for ``config`` (None without routes: today's behaviour, no cost)."""
    if not config.routes:
        return None
    return RouteRules.build(config.routes, mesh_domain=config.site.mesh_domain, mirrors=mirrors)
