"""The Consul source: py-consul over Consul's HTTP API, blocking queries, on trio.

Theory of operation
-------------------
One task watches ``/v1/catalog/services`` with a blocking query; it decides which services to
watch (:func:`~discovery.sources.consul_parse.select_services`) and runs one task per service
watching ``/v1/health/service/<name>`` the same way.  Each blocking query sends the index of
its last answer (``index``) and a ``wait``; Consul answers when something changed or when
``wait`` (+ up to ``wait/16``) ran out.  The next index follows HashiCorp's rules
(:func:`~discovery.sources.consul_parse.next_index`): reset to 0 when it goes backwards.

The watchers only record results in a :class:`_View` and wake the *emitter*, a single task that
turns the view into events.  Because the emitter reads the whole view after each wake-up,
bursts coalesce; ``version`` is the ``X-Consul-Index`` of the latest answer.  The catalog first
sees one :class:`Resynced` with the complete set, then Added / Updated / Removed for the
endpoints of the services that changed (:func:`decide`): a 1 % churn over a 100k-endpoint
catalog costs the catalog 1k endpoint updates, not a full-set compare per wake-up.  Rules the
emitter follows:

* nothing is announced before the services list and every watched service answered once
  (or failed);
* any failing query (agent unreachable, 5xx, 403, malformed answer) -> :class:`SourceStale`
  once, with the reason; the last good endpoints of every service stay in the view and in the
  catalog -- a failure never removes anything;
* when every query succeeds again -> the endpoint events of what changed meanwhile, then
  :class:`SourceFresh`;
* each successful services-list round (at least every ``wait_s``) without a change confirms
  the view with :class:`SourceFresh`, so the catalog can tell a quiet source from a dead one.

With more watched services than connections for blocking queries (``max_connections``),
watchers take turns and each query's ``wait`` shrinks in proportion
(:meth:`_ConsulWatch.service_wait`), so a change is still seen within about ``wait_s``.

A failed query is retried after exponential backoff with full jitter
(:class:`discovery.backoff.Backoff`).  Cancelling the source cancels every request at once:
the HTTP client is trio-native (:mod:`discovery.sources.consul_http`).

The source reports ``started`` as soon as its configuration is valid, without waiting for
Consul: a gateway must come up (with its other sources) while Consul is down.
"""

from __future__ import annotations

import functools
import json
import logging
import random
import re
import ssl
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from itertools import chain
from typing import Any

import trio
from consul import base
from consul import exceptions as consul_exceptions

from discovery.backoff import Backoff
from discovery.events import Event, Resynced, SourceFresh, SourceStale
from discovery.model import Endpoint
from discovery.offload import Offload
from discovery.sources import consul_decode
from discovery.sources.config import ConsulSourceConfig
from discovery.sources.consul_decode import health_service
from discovery.sources.consul_delta import view_deltas
from discovery.sources.consul_http import TrioHTTPClient
from discovery.sources.consul_parse import (
    ConsulAclDenied,
    ConsulConfigError,
    ConsulError,
    ConsulHttpError,
    ConsulMalformedResponse,
    ConsulUnavailable,
    Fingerprint,
    format_wait,
    next_index,
    parse_catalog_services,
    parse_health_service,
    parse_index,
    parse_node_meta,
    select_services,
)
from foundation.redact import remember_secret

log = logging.getLogger(__name__)

CATALOG = "catalog/services"
# HashiCorp: rate-limit blocking queries, an answer is no proof of a change.
_MIN_ROUND_S = 0.1
_MIN_SHARED_WAIT_S = _MIN_ROUND_S
_REASON_CHARS = 300
EMIT_SLICE = 256  # events the emitter hands over per step of the event loop


class TrioConsul(base.Consul):  # type: ignore[misc]
    """py-consul's API on :class:`TrioHTTPClient`: every method returns an awaitable."""

    def __init__(self, client: TrioHTTPClient, *, token: str | None, dc: str | None) -> None:
        self._client = client
        super().__init__(
            host=client.host, port=client.port, scheme=client.scheme, dc=dc, verify=True
        )
        # py-consul lets CONSUL_HTTP_TOKEN override the argument; the config is the one truth.
        self.token = token

    def http_connect(
        self, host: str, port: int, scheme: str, verify: Any = True, cert: Any = None
    ) -> Any:
        return self._client


def build_client(config: ConsulSourceConfig) -> TrioHTTPClient:
    """The HTTP client for ``config.address`` with TLS, bounds and ``ns``/``partition``."""
    url = urllib.parse.urlsplit(config.address)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ConsulConfigError(f"address {config.address!r} is not http(s)://host[:port]")
    try:
        port = url.port or (8501 if url.scheme == "https" else 8500)
    except ValueError as err:
        raise ConsulConfigError(f"address {config.address!r}: {err}") from err
    context: ssl.SSLContext | None = None
    if url.scheme == "https":
        ca = str(config.ca_file) if config.ca_file else None
        context = ssl.create_default_context(cafile=ca)
        if config.cert_file is not None:
            key = str(config.key_file) if config.key_file else None
            context.load_cert_chain(str(config.cert_file), key)
    elif config.ca_file or config.cert_file:
        raise ConsulConfigError("ca_file/cert_file need an https:// address")
    extra: list[tuple[str, str]] = []
    if config.namespace:
        extra.append(("ns", config.namespace))
    if config.partition:
        extra.append(("partition", config.partition))
    return TrioHTTPClient(
        url.hostname,
        port,
        url.scheme,
        ssl_context=context,
        extra_params=tuple(extra),
        max_body_bytes=config.max_body_bytes,
        max_connections=config.max_connections,
        connect_timeout_s=config.connect_timeout_s,
        margin_s=config.request_margin_s,
    )


def translate(err: Exception) -> ConsulError:
    """py-consul's exceptions (raised by its status/JSON callbacks) -> our typed errors."""
    text = str(err)[:_REASON_CHARS]
    if isinstance(err, ConsulError):
        return err
    if isinstance(err, consul_exceptions.ACLPermissionDenied):
        return ConsulAclDenied(f"403 {text}")
    if isinstance(err, (RecursionError, json.JSONDecodeError)):
        return ConsulMalformedResponse(f"undecodable JSON: {type(err).__name__}")
    if type(err) is consul_exceptions.ConsulException:
        if re.match(r"^5\d\d ", text):
            return ConsulUnavailable(text)
        return ConsulMalformedResponse(text)
    return ConsulHttpError(text)


_PY_CONSUL_ERRORS = (consul_exceptions.ConsulException, RecursionError, ConsulError)


@dataclass
class _View:
    """What the watchers know; read by the emitter (plain data, no I/O)."""

    watched: tuple[str, ...] | None = None  # None until the services list answered once
    endpoints: dict[str, tuple[Endpoint, ...]] = field(default_factory=dict)
    last_index: int = 0  # X-Consul-Index of the latest successful answer
    failing: dict[str, str] = field(default_factory=dict)
    confirm: bool = False

    def ready(self) -> bool:
        if self.watched is None:
            return bool(self.failing)
        return all(name in self.endpoints or name in self.failing for name in self.watched)

    def names(self) -> list[str]:
        return sorted(set(self.watched or ()))

    def full_set(self) -> tuple[Endpoint, ...]:
        """Every watched service's endpoints, sorted by key.

        Each service's tuple is already deduplicated and sorted by (address, port) by
        :func:`parse_health_service`, and endpoints of different Consul services have different
        service names, so concatenating in name order *is* the sorted, deduplicated set -- in
        C-speed copies rather than a Python-level sort of 100k keys, which stalled the event
        loop for hundreds of milliseconds on every wake-up of a large catalog.
        """
        return tuple(chain.from_iterable(self.endpoints.get(n, ()) for n in self.names()))

    def differs(self, told: dict[str, tuple[Endpoint, ...] | None]) -> bool:
        """Whether any service's endpoints differ from ``told`` (identity first: a watcher keeps
        the stored tuple when an answer is equal to it, so unchanged services cost nothing)."""
        names = self.names()
        if len(names) != len(told):
            return True
        for name in names:
            if name not in told:
                return True
            mine, theirs = self.endpoints.get(name), told[name]
            if mine is not theirs and mine != theirs:
                return True
        return False

    def version(self) -> str:
        return str(self.last_index)


@dataclass
class _Announced:
    """What the catalog was last told."""

    announced: bool = False  # a first Resynced went out
    stale: bool = False
    per_service: dict[str, tuple[Endpoint, ...] | None] = field(default_factory=dict)


def decide(view: _View, told: _Announced, source: str, at: float) -> Iterator[Event]:
    """The events that bring the catalog from ``told`` to ``view`` (updates ``told`` now).

    The first announcement is one :class:`Resynced` with the full set; after that a change is
    sent as Added / Updated / Removed events for the endpoints of the services that changed
    (:mod:`discovery.sources.consul_delta`), so the catalog's work is proportional to the
    change, not to the catalog.  Endpoint events do not confirm a stale source, so a
    recovery or a services-list round sends :class:`SourceFresh` after them.

    The endpoint events are computed lazily, service by service, as the caller iterates: a
    rollout that changed hundreds of services at once is many short steps of the emitter, not
    one long one.  (``told`` is replaced, never mutated, so the lazy part reads a fixed state.)
    """
    if not view.ready():
        return iter(())
    head: list[Event] = []
    deltas: Iterator[Event] = iter(())
    tail: list[Event] = []
    changed = view.watched is not None and (not told.announced or view.differs(told.per_service))
    resynced = False
    if changed:
        current = {n: view.endpoints.get(n) for n in view.names()}
        if told.announced:
            version = view.version()
            deltas = view_deltas(told.per_service, current, source=source, version=version, at=at)
        else:
            head.append(Resynced(source, view.full_set(), view.version(), at))
            told.announced = resynced = True
            told.stale = False
        told.per_service = current
    if view.failing:
        if not told.stale or resynced:
            reasons = "; ".join(f"{q}: {r}" for q, r in sorted(view.failing.items())[:3])
            tail.append(SourceStale(source, reasons[:_REASON_CHARS], at))
            told.stale = True
    elif not resynced and (told.stale or view.confirm) and told.announced:
        tail.append(SourceFresh(source, view.version(), at))
        told.stale = False
    view.confirm = False
    return chain(head, deltas, tail)


class _ConsulWatch:
    def __init__(self, config: ConsulSourceConfig, send: trio.MemorySendChannel[Event]) -> None:
        self.config = config
        self.send = send
        self.node_meta = parse_node_meta(config.node_meta)
        self.client = build_client(config)
        self.consul: TrioConsul | None = None
        self.backoff = Backoff(base_s=config.backoff_base_s, cap_s=config.backoff_cap_s)
        self.random = random.Random()
        self.view = _View()
        self.told = _Announced()
        self.wakeup = trio.Event()
        self.watchers: dict[str, trio.CancelScope] = {}
        self.parser = Offload()  # parses answers off the loop (see watch_service)

    async def token(self) -> str | None:
        """The ACL token (config or ``token_file``), registered so logs never show it."""
        if self.config.token is not None:
            remember_secret(self.config.token)
            return self.config.token
        if self.config.token_file is not None:
            try:
                token = (await trio.Path(self.config.token_file).read_text()).strip() or None
            except OSError as err:
                raise ConsulConfigError(f"token_file {self.config.token_file}: {err}") from err
            remember_secret(token)
            return token
        return None

    def changed(self) -> None:
        self.wakeup.set()

    async def run(self, task_status: trio.TaskStatus[None]) -> None:
        token = await self.token()
        self.consul = TrioConsul(self.client, token=token, dc=self.config.datacenter)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.emit)
                nursery.start_soon(self.watch_catalog, nursery)
                task_status.started()
        finally:
            await self.client.close()  # its idle keep-alive connections (cancel-safe)

    async def emit(self) -> None:
        while True:
            await self.wakeup.wait()
            self.wakeup = trio.Event()
            events = decide(self.view, self.told, self.config.name, trio.current_time())
            for count, event in enumerate(events, 1):
                # A checkpoint per event would be 100k scheduler turns for a full rollout: put
                # what fits, checkpoint every EMIT_SLICE events, wait only when the channel is
                # full (the catalog is behind).
                try:
                    self.send.send_nowait(event)
                except trio.WouldBlock:
                    await self.send.send(event)
                if count % EMIT_SLICE == 0:
                    await trio.lowlevel.checkpoint()

    async def failed(self, query: str, err: ConsulError, attempt: int) -> None:
        reason = f"{type(err).__name__}: {err}"[:_REASON_CHARS]
        # Warn on a new problem; repeats of the same one (retries while Consul is down) are
        # debug, so an outage of hours with hundreds of services does not flood the log.
        level = logging.DEBUG if self.view.failing.get(query) == reason else logging.WARNING
        log.log(level, "consul source %s: %s: %s", self.config.name, query, reason)
        self.view.failing[query] = reason
        self.changed()
        if isinstance(err, ConsulAclDenied) and self.consul is not None:
            try:
                self.consul.token = await self.token()  # a rotated token file is picked up
            except ConsulConfigError as token_err:
                log.warning("consul source %s: %s", self.config.name, token_err)
        await trio.sleep(self.backoff.delay(attempt, self.random.random()))

    def succeeded(self, query: str, received: int) -> None:
        if self.view.failing.pop(query, None) is not None:
            log.info("consul source %s: %s: recovered", self.config.name, query)
        self.view.last_index = received

    async def watch_catalog(self, nursery: trio.Nursery) -> None:
        assert self.consul is not None
        index, attempt = 0, 0
        while True:
            started = trio.current_time()
            try:
                raw_index, data = await self.consul.catalog.services(
                    index=index or None,
                    wait=format_wait(self.config.wait_s),
                    node_meta=dict(self.node_meta) or None,
                )
                received = parse_index(raw_index)
                selection = select_services(
                    parse_catalog_services(data),
                    wanted=self.config.services,
                    tags=self.config.tags,
                )
            except _PY_CONSUL_ERRORS as err:
                index = 0  # a blocking retry would hide the recovery until the next change
                await self.failed(CATALOG, translate(err), attempt)
                attempt += 1
                continue
            attempt = 0
            index = next_index(index, received)
            for name, why in selection.skipped:
                log.warning("consul source %s: skipping %r: %s", self.config.name, name, why)
            self.succeeded(CATALOG, received)
            self.reconcile(selection.watch, nursery)
            self.view.confirm = True
            self.changed()
            await trio.sleep_until(started + _MIN_ROUND_S)

    def reconcile(self, watch: tuple[str, ...], nursery: trio.Nursery) -> None:
        """Start watchers for new services, stop those of services that left the catalog."""
        for name in set(self.watchers) - set(watch):
            self.watchers.pop(name).cancel()
            self.view.endpoints.pop(name, None)
            self.view.failing.pop(name, None)
        for name in watch:
            if name not in self.watchers:
                scope = trio.CancelScope()
                self.watchers[name] = scope
                nursery.start_soon(self.watch_service, name, scope)
        self.view.watched = watch

    def service_wait(self) -> float:
        """``wait`` for a service's blocking query, shortened when watchers share connections.

        With more watched services than blocking-query connections, watchers take turns; a
        full turn lasts about ``watched / slots * wait``.  Scaling ``wait`` by ``slots /
        watched`` keeps a turn near ``wait_s`` -- the bound on how late a change is seen --
        at the same request rate as one query per service per ``wait_s``.
        """
        watched = len(self.view.watched or ())
        slots = self.client.limiter.total_tokens
        if watched <= slots:
            return self.config.wait_s
        return max(_MIN_SHARED_WAIT_S, self.config.wait_s * slots / watched)

    async def watch_service(self, name: str, scope: trio.CancelScope) -> None:
        assert self.consul is not None
        index, attempt = 0, 0
        known: Mapping[Fingerprint, Endpoint] = {}  # instances of the last answer, unparsed
        with scope:
            while True:
                started = trio.current_time()
                try:
                    # py-consul's query, decoded by orjson when installed (consul_decode.py)
                    raw_index, data = await health_service(
                        self.client,
                        name,
                        index=index or None,
                        wait=format_wait(self.service_wait()),
                        tags=self.config.tags,
                        node_meta=dict(self.node_meta),
                        dc=self.consul.dc,
                        headers=self.consul.prepare_headers(),
                        loads=consul_decode.DECODERS[consul_decode.DEFAULT_DECODER],
                    )
                    received = parse_index(raw_index)
                    # In a worker thread, one answer at a time, with a rest after it: when
                    # Consul answers hundreds of parked queries at once (a rollout, a churn
                    # spread over every service), the loop keeps serving requests meanwhile.
                    report = await self.parser.run(
                        functools.partial(
                            parse_health_service,
                            data,
                            service=name,
                            namespace=self.config.target_namespace,
                            tags=self.config.tags,
                            node_meta=self.node_meta,
                            known=known,
                        )
                    )
                except _PY_CONSUL_ERRORS as err:
                    if scope.cancel_called:
                        return  # the service left the catalog meanwhile: record nothing
                    index = 0  # after an error, the first answer must come at once
                    await self.failed(name, translate(err), attempt)
                    attempt += 1
                    continue
                if scope.cancel_called:
                    return
                attempt = 0
                index = next_index(index, received)
                for why in report.skipped:
                    log.warning("consul source %s: skipping instance %s", self.config.name, why)
                self.succeeded(name, received)
                known = report.fingerprints
                if report.endpoints != self.view.endpoints.get(name):
                    self.view.endpoints[name] = report.endpoints  # else keep the told tuple
                self.changed()
                await trio.sleep_until(started + _MIN_ROUND_S)


async def serve_consul_source(
    config: ConsulSourceConfig,
    send: trio.MemorySendChannel[Event],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the Consul source until cancelled, emitting into ``send`` (see module docstring).

    Raises :class:`ConsulConfigError` before ``started`` if the configuration is unusable
    (address, TLS files, ``node_meta``); Consul being unreachable is never an exception here,
    only :class:`SourceStale` and retries.
    """
    try:
        watch = _ConsulWatch(config, send)
    except (OSError, ssl.SSLError) as err:
        raise ConsulConfigError(f"consul source {config.name}: {err}") from err
    await watch.run(task_status)
