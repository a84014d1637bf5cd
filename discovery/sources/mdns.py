"""The ``mdns`` discovery source: DNS-SD browsing on the local link with zeroconf.

TXT keys and the record -> endpoint mapping are documented in
:mod:`discovery.sources.mdns_txt` (``svc``, ``ns``, ``proto``, ``spiffe``, ``weight``,
``locality``, ``health``).

Theory of operation
-------------------
Zeroconf runs its own asyncio loop thread, and each ``ServiceBrowser`` its own handler thread.
Nothing crosses into Trio except through :func:`trio.from_thread.run_sync` with the source's
Trio token, and what crosses is tiny: "instance X of type T changed (or left)".  The callback
runs in the Trio thread and records the hint in a :class:`_Mailbox` -- latest hint per instance
-- then pokes a memory channel of capacity 1.  The channel is never full in a way that matters:
a poke that finds it full is already represented by the pending one, so the zeroconf thread
never waits for the consumer, nothing is dropped, and nothing grows without bound (the mailbox
holds at most ``2 * max_instances`` names; beyond that it sets one "resync" flag instead and the
consumer re-reads every instance from zeroconf's cache -- coalescing, not dropping).

The consumer task owns an :class:`InstanceTable` (pure, no trio, no zeroconf).  For each hint it
reads the instance's *current* records from zeroconf's cache (the cache's read functions are
documented thread-safe) and lets the table decide the events:

* goodbye (browser says removed, or the PTR is gone)   -> ``Removed``;
* records map to an endpoint                           -> ``Added`` / ``Updated``
  (a changed address or port is ``Removed`` + ``Added``: it is a different endpoint key);
* records are hostile or unusable                      -> a logged :class:`MdnsRecordError`,
  and ``Removed`` if the instance had an endpoint;
* a new instance when ``max_instances`` are tracked    -> logged ``InstanceLimitExceeded``.

TTLs (RFC 6762 section 5.2): the table remembers, per instance, the earliest-expiring record
that the endpoint depends on (PTR, SRV, TXT, the SRV target's addresses).  At 80 % and 90 % of
its lifetime the source sends a query for the instance's SRV/TXT/A/AAAA so that a live publisher
refreshes them (the browser itself only refreshes PTRs); at 100 % it re-reads the cache, and
records that expired mean the publisher died silently: ``Removed``.  Zeroconf's own cache sweep
runs only every 10 s, so this timer is what makes silent death visible at TTL expiry.  Queries
are batched into one message per pass (at most ``QUERY_BATCH`` instances, at most one message
per ``QUERY_INTERVAL_MS``); an instance that misses a batch is looked at again shortly.

Bounds against a flood (say 10 000 instances announced at once): zeroconf's cache holds at most
10 000 records (it evicts the closest to expiry), the mailbox at most ``2 * max_instances``
names, the table at most ``max_instances`` endpoints (further instances: logged
``InstanceLimitExceeded``), and per-instance warnings are rate-limited to ``LOG_BURST`` per
``LOG_WINDOW_S`` plus one summary line.

Lifetime: ``serve_mdns_source`` owns the ``Zeroconf`` and the browser; cancelling it closes
both in a shielded worker thread, which joins zeroconf's threads before the source returns.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import random
from dataclasses import dataclass, field

import trio
from zeroconf import (
    InterfaceChoice,
    ServiceBrowser,
    ServiceInfo,
    ServiceStateChange,
    Zeroconf,
    current_time_millis,
)
from zeroconf._dns import DNSQuestion, DNSRecord
from zeroconf._protocol.outgoing import DNSOutgoing
from zeroconf.const import (
    _CLASS_IN,
    _FLAGS_QR_QUERY,
    _TYPE_A,
    _TYPE_AAAA,
    _TYPE_PTR,
    _TYPE_SRV,
    _TYPE_TXT,
)

from discovery.backoff import Backoff
from discovery.events import Added, Event, Removed, Resynced, SourceFresh, SourceStale, Updated
from discovery.model import Endpoint, EndpointKey
from discovery.sources.config import MdnsSourceConfig
from discovery.sources.mdns_txt import (
    InstanceLimitExceeded,
    MdnsObservation,
    MdnsRecordError,
    endpoint_from_observation,
)

log = logging.getLogger(__name__)

LOG_BURST = 20  # at most this many per-instance warnings per LOG_WINDOW_S, then a summary
LOG_WINDOW_S = 10.0
QUERY_BATCH = 512  # instances asked about per consumer pass (one message, split into packets)
RETRY_QUERY_MS = 250.0  # instances that did not fit in a batch are looked at again this soon
QUERY_INTERVAL_MS = 100.0  # at most one query message per interval (a flood must not echo)


class EndpointConflict(MdnsRecordError):
    """Two instances claim the same service, address and port; the later one is ignored."""


# --------------------------------------------------------------------------- pure core
@dataclass(frozen=True, slots=True)
class CacheReading:
    """An instance's live records at one moment, as read from zeroconf's cache."""

    observation: MdnsObservation
    complete: bool  # SRV, TXT and at least one address are all live
    created_ms: float  # creation time and TTL of the earliest-expiring record used
    ttl_s: float


def refresh_plan(
    created_ms: float, ttl_s: float, now_ms: float, jitter: float = 0.0
) -> tuple[bool, float]:
    """RFC 6762 section 5.2: query at 80 % and 90 % of a record's life, give up at 100 %.

    ``jitter`` (0..0.02, drawn by the caller) is added to the 80 % and 90 % points, as the RFC
    asks, so that gateways sharing a link do not all query in the same instant.
    Returns ``(query_now, next_check_ms)``.
    """
    life_ms = ttl_s * 1000.0
    t80 = created_ms + (0.8 + jitter) * life_ms
    t90 = created_ms + (0.9 + jitter) * life_ms
    end = created_ms + life_ms
    if now_ms < t80:
        return False, t80
    if now_ms < t90:
        return True, t90
    return now_ms < end, end


@dataclass(slots=True)
class _Entry:
    endpoint: Endpoint
    service_type: str
    check_at_ms: float


@dataclass(slots=True)
class InstanceTable:
    """Which endpoint each browsed instance currently maps to, and when to look at it again.

    Sans-IO: callers pass cache readings, the Trio time for events (``at``) and zeroconf's
    millisecond clock (``now_ms``).  Returns the events to emit and whether to send a query.
    """

    source: str
    default_namespace: str
    max_instances: int
    max_txt_bytes: int
    known: dict[str, _Entry] = field(default_factory=dict)
    owners: dict[EndpointKey, str] = field(default_factory=dict)
    version: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    _log_window_start: float = -math.inf
    _logged_in_window: int = 0
    _suppressed: int = 0

    def next_version(self) -> str:
        self.version += 1
        return str(self.version)

    def apply(
        self,
        instance: str,
        reading: CacheReading | None,
        *,
        at: float,
        now_ms: float,
        jitter: float = 0.0,
    ) -> tuple[list[Event], bool]:
        """Reconcile one instance with its current records (None: the instance is gone)."""
        if reading is None:
            return self._drop(instance, at), False
        query, check_at = refresh_plan(reading.created_ms, reading.ttl_s, now_ms, jitter)
        if not reading.complete:
            # Records still arriving, or SRV/TXT/A expired while the PTR lives: not routable.
            return self._drop(instance, at), True
        try:
            endpoint = endpoint_from_observation(
                reading.observation,
                default_namespace=self.default_namespace,
                max_txt_bytes=self.max_txt_bytes,
            )
            old = self.known.get(instance)
            if old is None and len(self.known) >= self.max_instances:
                raise InstanceLimitExceeded(
                    instance, f"source already tracks {self.max_instances} instances"
                )
            owner = self.owners.get(endpoint.key)
            if owner is not None and owner != instance:
                raise EndpointConflict(
                    instance, f"{endpoint.key} is already announced by {owner!r}"
                )
        except MdnsRecordError as exc:
            self._record_error(exc, at)
            return self._drop(instance, at), False
        self.known[instance] = _Entry(endpoint, reading.observation.service_type, check_at)
        if old is None:
            self.owners[endpoint.key] = instance
            return [Added(self.source, endpoint, self.next_version(), at)], query
        if old.endpoint == endpoint:
            return [], query
        if old.endpoint.key == endpoint.key:
            return [Updated(self.source, endpoint, self.next_version(), at)], query
        del self.owners[old.endpoint.key]
        self.owners[endpoint.key] = instance
        return [
            Removed(self.source, old.endpoint.key, self.next_version(), at),
            Added(self.source, endpoint, self.next_version(), at),
        ], query

    def _drop(self, instance: str, at: float) -> list[Event]:
        old = self.known.pop(instance, None)
        if old is None:
            return []
        self.owners.pop(old.endpoint.key, None)
        return [Removed(self.source, old.endpoint.key, self.next_version(), at)]

    def recheck_soon(self, instance: str, at_ms: float) -> None:
        """Look at ``instance`` again by ``at_ms`` (its refresh query could not be sent yet)."""
        entry = self.known.get(instance)
        if entry is not None:
            entry.check_at_ms = min(entry.check_at_ms, at_ms)

    def due(self, now_ms: float) -> list[str]:
        return [name for name, e in self.known.items() if e.check_at_ms <= now_ms]

    def next_check_ms(self) -> float | None:
        return min((e.check_at_ms for e in self.known.values()), default=None)

    def _record_error(self, exc: MdnsRecordError, at: float) -> None:
        kind = type(exc).__name__
        self.errors[kind] = self.errors.get(kind, 0) + 1
        if at - self._log_window_start >= LOG_WINDOW_S:
            if self._suppressed:
                log.warning(
                    "mdns source %s: %d more record errors suppressed",
                    self.source,
                    self._suppressed,
                )
            self._log_window_start, self._logged_in_window, self._suppressed = at, 0, 0
        if self._logged_in_window < LOG_BURST:
            self._logged_in_window += 1
            log.warning("mdns source %s: %s: %s (instance skipped)", self.source, kind, exc)
        else:
            self._suppressed += 1


# --------------------------------------------------------------------------- thread bridge
@dataclass(slots=True)
class _Mailbox:
    """Latest hint per (type, instance), filled by callbacks that run in the Trio thread."""

    wake: trio.MemorySendChannel[None]
    limit: int
    pending: dict[tuple[str, str], bool] = field(default_factory=dict)  # -> removed?
    resync: bool = False

    def offer(self, service_type: str, instance: str, removed: bool) -> None:
        key = (service_type, instance)
        if key in self.pending or len(self.pending) < self.limit:
            self.pending[key] = removed
        else:
            self.resync = True  # coalesce: the consumer re-reads the whole cache
        # WouldBlock: a wake-up is already pending; Broken/Closed: the source is shutting down.
        with contextlib.suppress(
            trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError
        ):
            self.wake.send_nowait(None)

    def take(self) -> tuple[dict[tuple[str, str], bool], bool]:
        batch, resync = self.pending, self.resync
        self.pending, self.resync = {}, False
        return batch, resync


def _on_state_change(
    mailbox: _Mailbox,
    token: trio.lowlevel.TrioToken,
    *,
    zeroconf: Zeroconf,
    service_type: str,
    name: str,
    state_change: ServiceStateChange,
) -> None:
    """Runs in zeroconf's browser thread: hand the hint to Trio, wait only for the handoff."""
    removed = state_change is ServiceStateChange.Removed
    with contextlib.suppress(trio.RunFinishedError):  # the source has already ended
        trio.from_thread.run_sync(mailbox.offer, service_type, name, removed, trio_token=token)


# --------------------------------------------------------------------------- cache access
def _live(records: list[DNSRecord], now_ms: float) -> list[DNSRecord]:
    return [r for r in records if not r.is_expired(now_ms)]


def read_cache(
    zc: Zeroconf, service_type: str, instance: str, now_ms: float
) -> CacheReading | None:
    """The instance's live records (thread-safe cache reads only), or None if its PTR is gone."""
    cache = zc.cache
    ptr = cache.current_entry_with_name_and_alias(service_type, instance)
    if ptr is None or ptr.is_expired(now_ms):
        return None
    info = ServiceInfo(service_type, instance)
    complete = info.load_from_cache(zc, now_ms)
    used: list[DNSRecord] = [ptr]
    used += _live(cache.get_all_by_details(instance, _TYPE_SRV, _CLASS_IN), now_ms)[:1]
    used += _live(cache.get_all_by_details(instance, _TYPE_TXT, _CLASS_IN), now_ms)[:1]
    has_srv = any(r.type == _TYPE_SRV for r in used)
    if has_srv and info.server:
        addrs = _live(cache.get_all_by_details(info.server, _TYPE_A, _CLASS_IN), now_ms)
        addrs += _live(cache.get_all_by_details(info.server, _TYPE_AAAA, _CLASS_IN), now_ms)
        if addrs:
            used.append(max(addrs, key=lambda r: r.get_expiration_time(100)))
    earliest = min(used, key=lambda r: r.get_expiration_time(100))
    observation = MdnsObservation(
        instance=instance,
        service_type=service_type,
        port=info.port if has_srv else None,
        server=info.server if has_srv else None,
        addresses=tuple(info.parsed_addresses()),
        txt=info.text or b"",
    )
    return CacheReading(observation, complete and has_srv, earliest.created, earliest.ttl)


def send_refresh_query(zc: Zeroconf, wanted: list[tuple[str, str | None]]) -> None:
    """Ask the link for instances' SRV/TXT and their hosts' addresses, in one message that
    zeroconf splits into packets (``zc.send`` is thread-safe)."""
    out = DNSOutgoing(_FLAGS_QR_QUERY)
    hosts: set[str] = set()
    for instance, server in wanted:
        out.add_question(DNSQuestion(instance, _TYPE_SRV, _CLASS_IN))
        out.add_question(DNSQuestion(instance, _TYPE_TXT, _CLASS_IN))
        if server and server not in hosts:
            hosts.add(server)
            out.add_question(DNSQuestion(server, _TYPE_A, _CLASS_IN))
            out.add_question(DNSQuestion(server, _TYPE_AAAA, _CLASS_IN))
    zc.send(out)


# --------------------------------------------------------------------------- trio adapter
def _open_zeroconf(interfaces: tuple[str, ...]) -> Zeroconf:
    return Zeroconf(interfaces=list(interfaces) if interfaces else InterfaceChoice.All)


def _close(browser: ServiceBrowser | None, zc: Zeroconf) -> None:
    if browser is not None:
        browser.cancel()  # joins the browser thread
    zc.close()  # stops and joins zeroconf's loop thread


async def serve_mdns_source(
    config: MdnsSourceConfig,
    send: trio.MemorySendChannel[Event],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Browse ``config.service_types`` and emit endpoint events until cancelled."""
    table = InstanceTable(
        config.name, config.default_namespace, config.max_instances, config.max_txt_bytes
    )
    wake_send, wake_recv = trio.open_memory_channel[None](1)
    mailbox = _Mailbox(wake_send, limit=2 * config.max_instances)
    token = trio.lowlevel.current_trio_token()
    # Tell the catalog we know nothing yet: endpoints from an earlier run of this source
    # (which saw no goodbyes) must not linger.
    await send.send(Resynced(config.name, (), table.next_version(), trio.current_time()))
    backoff, attempt = Backoff(base_s=0.5, cap_s=30.0), 0
    while True:  # interfaces may not exist yet: retry with jittered backoff, marked stale
        try:
            zc = await trio.to_thread.run_sync(_open_zeroconf, config.interfaces)
            break
        except OSError as exc:
            log.warning("mdns source %s: cannot open mDNS sockets: %s", config.name, exc)
            await send.send(
                SourceStale(config.name, f"mDNS unavailable: {exc}", trio.current_time())
            )
            if attempt == 0:
                task_status.started()
            await trio.sleep(backoff.delay(attempt, random.random()))
            attempt += 1
    browser: ServiceBrowser | None = None
    try:
        handler = functools.partial(_on_state_change, mailbox, token)
        browser = ServiceBrowser(zc, list(config.service_types), handlers=[handler])
        if attempt == 0:
            task_status.started()
        else:
            await send.send(SourceFresh(config.name, table.next_version(), trio.current_time()))
        log.info("mdns source %s: browsing %s", config.name, ", ".join(config.service_types))
        types = {t.lower(): t for t in config.service_types}
        last_query_ms = -math.inf
        while True:
            next_ms = table.next_check_ms()
            delay = (
                math.inf if next_ms is None else max(0.0, (next_ms - current_time_millis()) / 1000)
            )
            with trio.move_on_after(delay):
                await wake_recv.receive()
            batch, resync = mailbox.take()
            now_ms = current_time_millis()
            work: dict[str, bool] = {}  # instance -> removed hint
            service_type_of: dict[str, str] = {}
            for (stype, instance), removed in batch.items():
                work[instance], service_type_of[instance] = removed, stype
            for instance in table.due(now_ms):
                work.setdefault(instance, False)
            if resync:
                for stype in types.values():
                    for ptr in zc.cache.get_all_by_details(stype, _TYPE_PTR, _CLASS_IN):
                        alias = getattr(ptr, "alias", "")
                        work.setdefault(alias, False)
                        service_type_of.setdefault(alias, stype)
                for instance in table.known:
                    work.setdefault(instance, False)
            may_query = now_ms - last_query_ms >= QUERY_INTERVAL_MS
            if await _reconcile(zc, table, send, work, service_type_of, now_ms, may_query):
                last_query_ms = now_ms
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_close, browser, zc)
            wake_recv.close()


async def _reconcile(
    zc: Zeroconf,
    table: InstanceTable,
    send: trio.MemorySendChannel[Event],
    work: dict[str, bool],
    service_type_of: dict[str, str],
    now_ms: float,
    may_query: bool,
) -> bool:
    """Re-read and re-map each instance in ``work``; emit events; send (at most) one batched
    query.  Known instances whose query could not go out now are re-checked shortly."""
    wanted: list[tuple[str, str | None]] = []
    for n, (instance, removed) in enumerate(work.items()):
        if n % 256 == 255:
            # Yield now and then: zeroconf's browser thread waits for its hand-offs to run.
            await trio.lowlevel.checkpoint()
        stype = service_type_of.get(instance) or _type_of(table, instance)
        reading = None if removed or stype is None else read_cache(zc, stype, instance, now_ms)
        events, query = table.apply(
            instance,
            reading,
            at=trio.current_time(),
            now_ms=now_ms,
            jitter=random.uniform(0.0, 0.02),
        )
        if query and reading is not None:
            if may_query and len(wanted) < QUERY_BATCH:
                wanted.append((instance, reading.observation.server))
            else:
                table.recheck_soon(instance, now_ms + RETRY_QUERY_MS)
        for event in events:
            await send.send(event)
    if wanted:
        send_refresh_query(zc, wanted)
    return bool(wanted)


def _type_of(table: InstanceTable, instance: str) -> str | None:
    entry = table.known.get(instance)
    return None if entry is None else entry.service_type
