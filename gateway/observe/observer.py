"""The Trio-side adapter: one call at each end of an exchange feeds metrics and access log.

Why here and not in every listener: the origin's exchange is ``Router.forward`` (every
listener calls it) and the destination's is the east-west handler; each calls
:meth:`Observer.begin_origin`/:meth:`Observer.begin_destination` once, wraps its writer and
body (counting bytes and the time to the response head), and calls :meth:`Observer.finish`
once, with the exception if there was one.  The status of an exchange that ended in an error
is the one :func:`gateway.http.rescue.rescue` gives that error (the response the caller
gets), ``none`` when it was reset.

Label values are bounded: ``service`` is a service some site knows (``known``) or ``other``,
``site`` a configured site or ``other``, ``listener`` a configured listener name, ``route``
the label of a configured ``[[routes]]`` entry (``none``: no route took the request; past
``MAX_ROUTE_LABELS`` distinct ones, which only many reloads of new names reach, ``other``).
"""

from __future__ import annotations

import contextvars
import functools
import time
from collections.abc import Callable, Collection, Sequence

import trio

from discovery.model import ServiceName
from foundation.redact import redact
from foundation.spiffe_id import SpiffeId, SpiffeIdError
from gateway.http.errors import RateLimited
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
from gateway.http.overlay_headers import CALLER_ID_HEADER, REQUEST_ID_HEADER
from gateway.http.rescue import Answer, rescue
from gateway.observe.access_log import AccessLog
from gateway.observe.metrics import OTHER, GaugeFamily, HistogramSeries, Labels, Registry
from gateway.observe.record import CURRENT_RECORD, ExchangeRecord, access_line, status_class
from gateway.observe.request_id import is_request_id, new_request_id, request_id_for
from overlay.address import AddressError, parse_authority_cached

__all__ = ["LISTENER", "AccessLog", "Observer", "sampled"]

#: The listener serving the current connection (set once per connection by the listener; the
#: tasks it spawns inherit it).
LISTENER: contextvars.ContextVar[str] = contextvars.ContextVar("isthmus_listener", default="")


def _track(rec: ExchangeRecord) -> ExchangeRecord:
    """``rec``, as the current task's record (:data:`~gateway.observe.record.CURRENT_RECORD`)."""
    CURRENT_RECORD.set(rec)
    return rec


def sampled(request_id: str, rate: float) -> bool:
    """Is this request logged?  Decided by the request ID, so both gateways an exchange
    crosses log it or neither does (their lines join)."""
    if rate >= 1.0:
        return True
    if rate <= 0.0:
        return False
    try:
        return int(request_id[:8], 16) < rate * 0x1_0000_0000
    except ValueError:
        return True


def _service_of(authority: str, mesh_domain: str) -> str:
    try:
        address, _port = parse_authority_cached(authority, mesh_domain=mesh_domain)
    except AddressError:
        return ""
    return str(address.service_name)


class _ObservedBody:
    """A request body that counts the bytes the caller sent."""

    __slots__ = ("inner", "rec")

    def __init__(self, inner: Body, rec: ExchangeRecord) -> None:
        self.inner = inner
        self.rec = rec

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        self.rec.bytes_in += len(data)
        return data

    @property
    def trailers(self) -> Headers:
        return self.inner.trailers


class _ObservedWriter:
    """A response writer that notes the status, the time to the head and the bytes."""

    __slots__ = ("clock", "inner", "rec")

    def __init__(self, inner: ResponseWriter, rec: ExchangeRecord, clock: Callable[[], float]):
        self.inner = inner
        self.rec = rec
        self.clock = clock

    @property
    def head_sent(self) -> bool:
        return self.inner.head_sent

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None:
        self.rec.status = response.status
        self.rec.head_at = self.clock()
        await self.inner.send_head(response, end_stream=end_stream)

    async def send_data(self, data: bytes) -> None:
        await self.inner.send_data(data)
        self.rec.bytes_out += len(data)

    async def send_end(self, trailers: Headers = ()) -> None:
        await self.inner.send_end(trailers)

    async def send_whole(self, response: Response, body: bytes, trailers: Headers = ()) -> None:
        """Keep the inner writer's one-write fast path (forwarders look for it with
        ``getattr``): without it every small response took the general path."""
        self.rec.status = response.status
        self.rec.head_at = self.clock()
        await send_whole_through(self.inner, response, body, trailers)
        self.rec.bytes_out += len(body)


class _ObservedTunnel(trio.abc.HalfCloseableStream):
    """An origin's L4 tunnel: bytes sent are the caller's (in), bytes received go back to
    it (out); closing it ends the record.  ``inner`` is what
    :func:`gateway.relay.abort_on_close` looks through."""

    def __init__(
        self, inner: trio.abc.HalfCloseableStream, rec: ExchangeRecord, observer: Observer | None
    ) -> None:
        self.inner = inner
        self.rec = rec
        self.observer: Observer | None = observer

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)
        self.rec.bytes_in += len(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        self.rec.bytes_out += len(data)
        return bytes(data)

    async def aclose(self) -> None:
        observer, self.observer = self.observer, None
        if observer is not None:
            observer.finish(self.rec)
        await self.inner.aclose()


class Observer:
    """Metrics and access log of one gateway (see the module docstring)."""

    def __init__(
        self,
        *,
        local_site: str,
        mesh_domain: str,
        sites: Collection[str],
        known: Callable[[ServiceName], bool],
        access_log: AccessLog | None = None,
        registry: Registry | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.local_site = local_site
        self.mesh_domain = mesh_domain
        self.sites = frozenset((local_site, *sites))
        self.known = known
        self.access_log = access_log
        self.clock = clock
        self.registry = registry if registry is not None else Registry()
        self._series: dict[Labels, _Series] = {}
        self._routes: set[str] = set()
        r = self.registry
        labels = ("side", "listener", "service", "site", "route")
        self.requests = r.counter(
            "isthmus_requests_total", "Requests and tunnels that ended.", labels
        )
        self.responses = r.counter(
            "isthmus_responses_total",
            "Requests and tunnels that ended, by response status class (none: reset or "
            "caller gone before any response).",
            (*labels, "code"),
        )
        self.bytes_in = r.counter(
            "isthmus_request_bytes_total", "Request body bytes received from callers.", labels
        )
        self.bytes_out = r.counter(
            "isthmus_response_bytes_total", "Response body bytes sent to callers.", labels
        )
        self.head_seconds = r.histogram(
            "isthmus_response_head_seconds",
            "Time from the request's arrival to its response head.",
            labels,
        )
        self.total_seconds = r.histogram(
            "isthmus_request_duration_seconds",
            "Time from the request's arrival to the end of the exchange.",
            labels,
        )
        if access_log is not None:
            r.collector(lambda: access_log_gauges(access_log))
        self.failovers = r.counter(
            "isthmus_failovers_total",
            "Sites skipped while routing a request, by the site that was skipped.",
            labels,
        )
        self.retries = r.counter(
            "isthmus_retries_total",
            "Attempts made again after a failure (a retry, not a failover).",
            labels,
        )
        self.retries_denied = r.counter(
            "isthmus_retries_denied_total",
            "Retries a request qualified for but did not get: the service's retry budget "
            "was spent (budget) or its retries breaker was full (breaker).",
            (*labels, "reason"),
        )
        self.breaker_overflows = r.counter(
            "isthmus_breaker_overflows_total",
            "Requests refused at once (503) because a circuit breaker of the service in a "
            "site was full, by breaker.",
            (*labels, "breaker"),
        )
        self.rate_limited = r.counter(
            "isthmus_rate_limited_total",
            "Requests refused (429) by their route's rate limit, by route.",
            ("route",),
        )
        self.faults = r.counter(
            "isthmus_faults_injected_total",
            "Requests a route's fault injection acted on, by route and kind (abort: an "
            "answer with the abort status, reset: a reset, delay: a delay alone).",
            ("route", "kind"),
        )

    # -- begin -----------------------------------------------------------------------------

    def begin_origin(self, request: Request, ctx: CallContext) -> ExchangeRecord:
        """The record of a request entering the overlay here; its request ID is the caller's
        valid ``traceparent`` trace ID or a new one."""
        authority = request.authority.decode("ascii", "replace")
        return _track(
            ExchangeRecord(
                side="origin",
                listener=LISTENER.get() or OTHER,
                request_id=request_id_for(request.headers),
                started=self.clock(),
                wall_time=time.time(),
                method=request.method.decode("ascii", "replace"),
                authority=authority,
                path=request.path.decode("ascii", "replace"),
                caller_site=ctx.caller_site,
                caller_id=None if ctx.caller_id is None else str(ctx.caller_id),
                service=_service_of(authority, self.mesh_domain),
                tunnel=request.method == b"CONNECT",
            )
        )

    def begin_tunnel(self, authority: bytes, ctx: CallContext) -> ExchangeRecord:
        """The record of an L4 tunnel entering the overlay here (``CONNECT``, SNI, a TCP
        service port): it has no headers, so its request ID is always new."""
        text = authority.decode("ascii", "replace")
        return _track(
            ExchangeRecord(
                side="origin",
                listener=LISTENER.get() or OTHER,
                request_id=new_request_id(),
                started=self.clock(),
                wall_time=time.time(),
                method="CONNECT",
                authority=text,
                path="",
                caller_site=ctx.caller_site,
                caller_id=None if ctx.caller_id is None else str(ctx.caller_id),
                service=_service_of(text, self.mesh_domain),
                tunnel=True,
            )
        )

    def tunnel(
        self, rec: ExchangeRecord, stream: trio.abc.HalfCloseableStream, status: int
    ) -> trio.abc.HalfCloseableStream:
        """The opened tunnel ``stream``, counting its bytes; the record is finished when the
        stream is closed (which its owner always does)."""
        rec.status = status
        rec.head_at = self.clock()
        rec.tunnel = True
        return _ObservedTunnel(stream, rec, self)

    def count(
        self, rec: ExchangeRecord, stream: trio.abc.HalfCloseableStream
    ) -> trio.abc.HalfCloseableStream:
        """``stream`` (towards an endpoint), counting the bytes into ``rec``; the record is
        finished by its owner, not by closing this."""
        rec.tunnel = True
        return _ObservedTunnel(stream, rec, None)

    def begin_destination(
        self, peer_site: str, headers: Sequence[tuple[bytes, bytes]]
    ) -> ExchangeRecord:
        """The record of a peer's tunnel stream, from its raw header block (validated again,
        strictly, by the handler; here only what the access line shows)."""
        fields = {n: v for n, v in headers if n in _DESTINATION_FIELDS}
        authority = fields.get(b":authority", b"").decode("ascii", "replace")
        rid = fields.get(REQUEST_ID_HEADER, b"").decode("ascii", "replace")
        method = fields.get(b":method", b"")
        return _track(
            ExchangeRecord(
                side="destination",
                listener="east-west",
                request_id=rid if is_request_id(rid) else new_request_id(),
                started=self.clock(),
                wall_time=time.time(),
                method=method.decode("ascii", "replace"),
                authority=authority,
                path=fields.get(b":path", b"").decode("ascii", "replace"),
                caller_site=peer_site,
                caller_id=_caller_id(fields.get(CALLER_ID_HEADER)),
                service=_service_of(authority, self.mesh_domain),
                site=self.local_site,
                tunnel=method == b"CONNECT",
            )
        )

    def rejected(self, exc: BaseException, *, caller_site: str, caller_id: SpiffeId | None) -> None:
        """A local caller's request refused before it could be routed (its head too large:
        431, malformed: 400): counted and logged like any other, with what is known."""
        now = self.clock()
        rec = ExchangeRecord(
            side="origin",
            listener=LISTENER.get() or OTHER,
            request_id=new_request_id(),
            started=now,
            wall_time=time.time(),
            method="",
            authority="",
            path="",
            caller_site=caller_site,
            caller_id=None if caller_id is None else str(caller_id),
        )
        self.finish(rec, exc)

    def writer(self, rec: ExchangeRecord, writer: ResponseWriter) -> ResponseWriter:
        return _ObservedWriter(writer, rec, self.clock)

    def body(self, rec: ExchangeRecord, body: Body) -> Body:
        """The body, counted (an :class:`EmptyBody` stays one: the wires test for it)."""
        return body if isinstance(body, EmptyBody) else _ObservedBody(body, rec)

    # -- finish ----------------------------------------------------------------------------

    def finish(self, rec: ExchangeRecord, exc: BaseException | None = None) -> None:
        """Count the exchange and write its access line (if sampled).  Never raises."""
        rec.ended = self.clock()
        if exc is not None:
            head_sent = rec.head_at is not None
            action = rescue(exc, head_sent=head_sent, wire="h2", to_peer=rec.side != "origin")
            if isinstance(action, Answer):
                rec.status = action.head.status
            elif not head_sent:
                rec.status = 0
            rec.error = type(exc).__name__
        series = self._series_for(rec)
        series.requests[0] += 1
        code = status_class(rec.status)
        cell = series.responses.get(code)
        if cell is None:
            cell = series.responses[code] = self.responses.cell((*series.labels, code))
        cell[0] += 1
        if rec.bytes_in:
            if series.bytes_in is None:
                series.bytes_in = self.bytes_in.cell(series.labels)
            series.bytes_in[0] += rec.bytes_in
        if rec.bytes_out:
            if series.bytes_out is None:
                series.bytes_out = self.bytes_out.cell(series.labels)
            series.bytes_out[0] += rec.bytes_out
        if rec.head_at is not None:
            if series.head is None:
                series.head = self.head_seconds.series(series.labels)
            series.head.observe(rec.head_at - rec.started)
        series.total.observe(rec.ended - rec.started)
        labels = series.labels
        if rec.retries:
            self.retries.inc(labels, rec.retries)
        if rec.retry_denied:
            self.retries_denied.inc((*labels, rec.retry_denied))
        if rec.breaker:
            self.breaker_overflows.inc((*labels, rec.breaker))
        if rec.tried:
            side, listener, service, _site, route = labels
            for skipped, _why in rec.tried:
                where = skipped if skipped in self.sites else OTHER
                self.failovers.inc((side, listener, service, where, route))
        if rec.route:
            if rec.fault:
                self.faults.inc((labels[4], rec.fault))
            if isinstance(exc, RateLimited):
                self.rate_limited.inc((labels[4],))
        log = self.access_log
        if log is not None and sampled(rec.request_id, log.sample_rate):
            if rec.tried:
                rec.tried = [(s, redact(why)) for s, why in rec.tried]
            log.write(access_line(rec, self.local_site))

    def _known(self, service: str) -> bool:
        return self.known(_service_name(service))

    def _series_for(self, rec: ExchangeRecord) -> _Series:
        """The resolved metric series of ``rec``'s label set.  The labels are bounded first
        (unknown services and sites are ``other``), so the cache holds at most one entry per
        bounded label set; it is also emptied when it grows past ``_MAX_CACHED_SERIES``
        (the counts stay in the families, only the resolution is redone)."""
        service = rec.service
        if not service or not self._known(service):
            service = OTHER
        site = rec.site
        site = site if site in self.sites else (OTHER if site else "none")
        route = rec.route
        if not route:
            route = "none"
        elif route not in self._routes:
            route = self._admit_route(route)
        labels = (rec.side, rec.listener, service, site, route)
        series = self._series.get(labels)
        if series is None:
            if len(self._series) >= _MAX_CACHED_SERIES:
                self._series.clear()
            series = _Series(labels, self.requests.cell(labels), self.total_seconds.series(labels))
            self._series[labels] = series
        return series

    def _admit_route(self, route: str) -> str:
        """A route label not seen before: itself while fewer than ``MAX_ROUTE_LABELS`` are
        (they come from the config, so only reloads with ever new names get further)."""
        if len(self._routes) >= MAX_ROUTE_LABELS:
            return OTHER
        self._routes.add(route)
        return route


class _Series:
    """One bounded label set's counters and histograms, resolved once: an exchange's
    accounting is then a few additions (the families' own cells and rows)."""

    __slots__ = ("bytes_in", "bytes_out", "head", "labels", "requests", "responses", "total")

    def __init__(self, labels: Labels, requests: list[float], total: HistogramSeries) -> None:
        self.labels = labels
        self.requests = requests
        self.total = total
        self.responses: dict[str, list[float]] = {}
        self.bytes_in: list[float] | None = None
        self.bytes_out: list[float] | None = None
        self.head: HistogramSeries | None = None


_MAX_CACHED_SERIES = 4096
#: Distinct ``route`` label values (the config's ``[[routes]]`` labels) before ``other``.
MAX_ROUTE_LABELS = 500


@functools.lru_cache(maxsize=4096)
def _service_name(service: str) -> ServiceName:
    """``name.namespace`` as a :class:`ServiceName` (bounded memo: the same few names come
    back on every request)."""
    name, _, namespace = service.partition(".")
    return ServiceName(name, namespace)


_DESTINATION_FIELDS = frozenset(
    {b":method", b":authority", b":path", REQUEST_ID_HEADER, CALLER_ID_HEADER}
)


def _caller_id(raw: bytes | None) -> str | None:
    if raw is None:
        return None
    try:
        return str(SpiffeId.parse(raw.decode("ascii")))
    except (UnicodeDecodeError, SpiffeIdError):
        return None


def access_log_gauges(log: AccessLog) -> list[GaugeFamily]:
    return [
        GaugeFamily(
            "isthmus_access_log_dropped_total",
            "Access-log lines dropped because the writer fell behind (never waited for).",
            (),
            (((), float(log.dropped)),),
            kind="counter",
        ),
        GaugeFamily(
            "isthmus_access_log_write_errors_total",
            "Access-log lines lost to write errors (a full disk...).",
            (),
            (((), float(log.write_errors)),),
            kind="counter",
        ),
    ]
