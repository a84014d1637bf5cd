"""Export: what of the local catalog a given peer may see, and the sender's state machine.

Two pure pieces: consent and aggregation (:func:`compute_export`, :func:`update_export`)
decide *what* a peer sees; :class:`ExportSession` decides *what to send* on one federation
stream so that the peer converges to it (snapshot, then acknowledged deltas).

Theory of operation
-------------------
Export is by explicit consent.  Each :class:`~overlay.federation.config.ExportConfig` rule
names services (``service``/``namespace``, ``"*"`` for any), optionally requires tags, and
lists the peer sites allowed to import them (empty: every peer).  Consent is decided **per
endpoint**, because tags are per endpoint: an endpoint leaves the site (in aggregate) only if
some rule matches its service, all the rule's tags are on the endpoint, and the rule names the
peer.  So tagging half the instances of ``api`` ``public`` exports only that half's health,
capacity and identities -- nothing about the other half leaks.  The east-west side should
deliver imported traffic only to consented endpoints; :func:`consents` is the one predicate
both sides use.

Tags are endpoint metadata: a key ``tag:<t>`` (the value is ignored) or a ``tags`` entry
holding a comma-separated list (blanks around items are ignored).  Sources map their native
tags (Consul service tags, mDNS TXT) onto these.

What a peer sees per service (:class:`ExportedService`) is an aggregate -- name, namespace,
protocols, healthy and total endpoint counts, capacity (the sum of healthy endpoints'
weights) and the endpoints' SPIFFE IDs -- and **never endpoint addresses**: traffic goes
through the gateway.  A service whose consented endpoints are all unhealthy is still exported
(``healthy_count == 0``) so peers know it exists but is down; a service with no consented
endpoint is not exported at all.

Cost: :func:`compute_export` is linear in the endpoints.  For large catalogs,
:func:`update_export` recomputes only the services a catalog diff touched and returns the
set of services whose aggregate really changed, so the sender's delta work is proportional
to the change (see :class:`ExportSession`).  Both also exist as resumable generators
(:func:`compute_export_steps`, :func:`update_export_steps`, see :mod:`discovery.steps`) that
pause every ``slice_items`` endpoints, so the trio adapter never holds the event loop for the
whole catalog.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import immutables

from discovery.model import PROTOCOLS, Endpoint, Protocol, ServiceName
from discovery.steps import UNSLICED, Steps, complete
from foundation.names import label_problem
from foundation.spiffe_id import SpiffeId
from overlay.federation.config import ExportConfig
from overlay.federation.protocol import (
    MAX_MESSAGE_BYTES,
    Ack,
    Delta,
    ExportedService,
    FederationProtocolError,
    Message,
    Nack,
    Snapshot,
    check_epoch,
    wire_size_bound,
)

PART_BYTES = 256 * 1024
"""Soft size of one snapshot part or delta batch: the importer decodes and applies one frame in
one event-loop step, so a few milliseconds of work per frame instead of a 4 MiB frame's tens."""

TAG_PREFIX = "tag:"
TAGS_KEY = "tags"

_PROTOCOL_ORDER = {p: i for i, p in enumerate(PROTOCOLS)}


ExportView = immutables.Map[ServiceName, ExportedService]
"""A peer's exported view: service -> aggregate.  Persistent, so updates share structure."""

EMPTY_VIEW: ExportView = immutables.Map()


def endpoint_tags(endpoint: Endpoint) -> frozenset[str]:
    """The endpoint's tags, from ``tag:<t>`` keys and a comma-separated ``tags`` entry."""
    tags: set[str] = set()
    for key, value in endpoint.metadata:
        if key.startswith(TAG_PREFIX):
            tag = key[len(TAG_PREFIX) :]
            if tag:
                tags.add(tag)
        elif key == TAGS_KEY:
            tags.update(t for t in (item.strip() for item in value.split(",")) if t)
    return frozenset(tags)


def _rule_matches(rule: ExportConfig, endpoint: Endpoint, peer: str) -> bool:
    if rule.peers and peer not in rule.peers:
        return False
    if rule.service != "*" and rule.service != endpoint.service.name:
        return False
    if rule.namespace != "*" and rule.namespace != endpoint.service.namespace:
        return False
    return not rule.tags or endpoint_tags(endpoint).issuperset(rule.tags)


def consents(rules: Iterable[ExportConfig], endpoint: Endpoint, peer: str) -> bool:
    """Whether some rule lets ``peer`` see ``endpoint`` (in aggregate)."""
    return any(_rule_matches(rule, endpoint, peer) for rule in rules)


class _Tally:
    """A service's aggregate, built one endpoint at a time (so a sliced loop can pause anywhere,
    even inside one big service)."""

    __slots__ = ("capacity", "healthy", "ids", "protocols", "total")

    def __init__(self) -> None:
        self.protocols: set[Protocol] = set()
        self.ids: set[SpiffeId] = set()
        self.healthy = self.total = self.capacity = 0

    def add(self, ep: Endpoint) -> None:
        self.total += 1
        self.protocols.add(ep.protocol)
        if ep.spiffe_id is not None:
            self.ids.add(ep.spiffe_id)
        if ep.healthy:
            self.healthy += 1
            self.capacity += max(ep.weight, 0)

    def result(self, service: ServiceName) -> ExportedService | None:
        if self.total == 0:
            return None
        return ExportedService(
            service=service,
            protocols=tuple(sorted(self.protocols, key=_PROTOCOL_ORDER.__getitem__)),
            healthy_count=self.healthy,
            total_count=self.total,
            capacity=self.capacity,
            spiffe_ids=tuple(sorted(self.ids, key=str)),
        )


def aggregate(service: ServiceName, endpoints: Iterable[Endpoint]) -> ExportedService | None:
    """Aggregate already-consented endpoints of one service; None if there are none."""
    tally = _Tally()
    for ep in endpoints:
        tally.add(ep)
    return tally.result(service)


def compute_export(
    endpoints: Iterable[Endpoint], rules: Iterable[ExportConfig], peer: str
) -> ExportView:
    """The whole exported view of the local ``endpoints`` for ``peer``."""
    return complete(compute_export_steps(endpoints, rules, peer, slice_items=UNSLICED))


def compute_export_steps(
    endpoints: Iterable[Endpoint], rules: Iterable[ExportConfig], peer: str, *, slice_items: int
) -> Steps[ExportView]:
    """:func:`compute_export`, pausing after every ``slice_items`` endpoints."""
    rule_tuple = tuple(rules)
    tallies: dict[ServiceName, _Tally] = {}
    work = 0
    for ep in endpoints:
        work += 1
        if work >= slice_items:
            yield work
            work = 0
        if consents(rule_tuple, ep, peer):
            tally = tallies.get(ep.service)
            if tally is None:
                tally = tallies[ep.service] = _Tally()
            tally.add(ep)
    out: dict[ServiceName, ExportedService] = {}
    for service, tally in tallies.items():
        agg = tally.result(service)
        if agg is not None:
            out[service] = agg
    return immutables.Map(out)


def update_export(
    previous: ExportView,
    changed: Mapping[ServiceName, Iterable[Endpoint]],
    rules: Iterable[ExportConfig],
    peer: str,
) -> tuple[ExportView, frozenset[ServiceName]]:
    """Recompute only the services in ``changed`` (each with *all* its current endpoints).

    A service mapped to no endpoints (or none consented) is withdrawn.  Returns the new view
    and the services whose exported aggregate actually differs from ``previous`` -- the hint
    :meth:`~overlay.federation.protocol.ExportSession.set_view` takes to keep deltas
    proportional to the change.
    """
    steps = update_export_steps(previous, changed.items(), rules, peer, slice_items=UNSLICED)
    return complete(steps)


def update_export_steps(
    previous: ExportView,
    changed: Iterable[tuple[ServiceName, Iterable[Endpoint]]],
    rules: Iterable[ExportConfig],
    peer: str,
    *,
    slice_items: int,
) -> Steps[tuple[ExportView, frozenset[ServiceName]]]:
    """:func:`update_export` (``changed`` as pairs), pausing every ``slice_items`` endpoints."""
    rule_tuple = tuple(rules)
    touched: set[ServiceName] = set()
    work = 0
    with previous.mutate() as mutation:
        for service, eps in changed:
            tally = _Tally()
            for ep in eps:
                work += 1
                if work >= slice_items:
                    yield work
                    work = 0
                if ep.service == service and consents(rule_tuple, ep, peer):
                    tally.add(ep)
            agg = tally.result(service)
            old = previous.get(service)
            if agg == old:
                continue
            touched.add(service)
            if agg is None:
                del mutation[service]
            else:
                mutation[service] = agg
        view = mutation.finish()
    return view, frozenset(touched)


# --- the sender state machine ----------------------------------------------------------


def _check_site(site: str) -> str:
    problem = label_problem(site)
    if problem:
        raise ValueError(f"site name: {problem}")
    return site


@dataclass(frozen=True, slots=True)
class ExportStatistics:
    epoch: str
    last_sent_version: int
    acked_version: int
    in_flight: int
    queued: int
    snapshots_sent: int
    deltas_sent: int
    nacks_received: int
    last_nack_reason: str | None


@dataclass(slots=True)
class _InFlight:
    version: int
    is_snapshot: bool
    sent_at: float


class ExportSession:
    """The sender's state machine for one federation stream (pure, no I/O, no clock).

    Theory of operation
    -------------------
    One session per federation stream, with a fresh ``epoch`` (e.g. ``secrets.token_hex(8)``):
    versions count from 1 again in every session, so reusing an epoch would let an importer
    mistake a new session's version 3 for the old one's.

    The adapter tells the session the latest exported view (:meth:`set_view`), asks it what
    to send (:meth:`next_message`, until ``None``), and hands it every reply
    (:meth:`receive`).  Only the *latest* view matters: views set while the session is
    waiting are coalesced into one delta.

    * The first message of a session is a full :class:`Snapshot` (split into parts of about
      ``part_bytes``, so that the importer handles one part per short step of its event loop;
      only the final part is acknowledged).
    * After that, each batch is a :class:`Delta` from the **last sent** view to the current
      one (``base_version`` = last sent version), so deltas can be pipelined: up to
      ``window`` unacknowledged batches are in flight.  A delta too big for one frame is split
      into consecutive deltas (each a valid intermediate state).  Because HTTP/2 delivers in
      order, the importer holds the base of every delta unless something was lost.
    * An :class:`Ack` is cumulative.  A :class:`Nack` means the importer could not apply a
      delta (wrong base: a message was lost or the importer restarted): everything in flight
      is abandoned and the next batch is a full snapshot with a new version, which becomes the
      *resync floor* -- replies about versions below it are stale and ignored.
    * A Nack of a snapshot cannot be fixed by resending it, so it raises
      :class:`FederationProtocolError` (the adapter resets the link, with backoff).  So do
      replies naming a version never sent, already acknowledged, or another epoch.
    * Liveness: :meth:`oldest_unacked_at` lets the owner put a deadline on acknowledgements;
      when it passes, the owner resets the stream (or calls :meth:`resync`).

    Limits: one service's aggregate must fit in one frame (at the 4 MiB default, tens of
    thousands of distinct SPIFFE IDs); a bigger one makes
    :func:`~overlay.federation.protocol.encode_message` raise on the sending side rather than
    be silently truncated.

    Cost: with the ``changed`` hint of :meth:`set_view` (e.g. from
    :func:`~overlay.federation.export.update_export`) a delta looks only at the changed
    services, so a 1% change of a large catalog costs ~1% of a snapshot.
    """

    def __init__(
        self,
        origin_site: str,
        epoch: str,
        *,
        window: int = 4,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
        part_bytes: int = PART_BYTES,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        self.origin_site = _check_site(origin_site)
        try:
            self.epoch = check_epoch(epoch)
        except FederationProtocolError as exc:
            raise ValueError(str(exc)) from None
        self.window = window
        # Room for the envelope; parts of PART_BYTES unless one service alone is bigger.
        self._budget = min(max_message_bytes - 512, part_bytes)
        if self._budget < 1024:
            raise ValueError("max_message_bytes is too small")
        self._desired: Mapping[ServiceName, ExportedService] = {}
        self._sent: Mapping[ServiceName, ExportedService] = {}
        self._dirty: set[ServiceName] | None = set()
        self._version = 0
        self._floor = 1
        self._acked = 0
        self._need_snapshot = True
        self._in_flight: deque[_InFlight] = deque()
        self._outbox: deque[Snapshot | Delta] = deque()
        self._snapshots = self._deltas = self._nacks = 0
        self._last_nack: str | None = None

    # -- input ---------------------------------------------------------------------------

    def set_view(
        self,
        view: Mapping[ServiceName, ExportedService],
        changed: Iterable[ServiceName] | None = None,
    ) -> None:
        """Make ``view`` the one to converge to.

        ``changed``, if given, must name every service whose entry differs from the view
        passed to the previous call; then a delta inspects only those.  Without it the next
        delta compares the whole views (correct, but linear in the catalog).
        """
        self._desired = view
        if changed is None:
            self._dirty = None
        elif self._dirty is not None:
            self._dirty.update(changed)

    def receive(self, msg: Message) -> None:
        """Apply the importer's reply (an :class:`Ack` or :class:`Nack`)."""
        if not isinstance(msg, Ack | Nack):
            raise FederationProtocolError(f"an importer must not send a {type(msg).__name__}")
        if msg.epoch != self.epoch:
            raise FederationProtocolError(f"reply for epoch {msg.epoch!r}, not {self.epoch!r}")
        if msg.version < self._floor:
            return  # about a batch abandoned by a resync
        entry = next((e for e in self._in_flight if e.version == msg.version), None)
        if entry is None:
            raise FederationProtocolError(
                f"reply for version {msg.version}, which is not in flight"
            )
        if isinstance(msg, Ack):
            while self._in_flight and self._in_flight[0].version <= msg.version:
                self._in_flight.popleft()
            self._acked = msg.version
            return
        self._nacks += 1
        self._last_nack = msg.reason
        if entry.is_snapshot:
            raise FederationProtocolError(f"peer rejected a full snapshot: {msg.reason}")
        self.resync()

    def resync(self) -> None:
        """Abandon everything in flight and send a full snapshot next."""
        self._in_flight.clear()
        self._outbox.clear()
        self._need_snapshot = True
        self._floor = self._version + 1

    # -- output --------------------------------------------------------------------------

    def next_message(self, now: float) -> Snapshot | Delta | None:
        """The next message to send, or None if there is nothing to send right now."""
        if not self._outbox:
            if len(self._in_flight) >= self.window:
                return None
            if self._need_snapshot:
                self._plan_snapshot()
            else:
                self._plan_deltas()
            if not self._outbox:
                return None
        msg = self._outbox.popleft()
        if isinstance(msg, Delta):
            self._deltas += 1
            self._in_flight.append(_InFlight(msg.version, False, now))
        elif msg.final:
            self._snapshots += 1
            self._in_flight.append(_InFlight(msg.version, True, now))
        return msg

    def _chunks(self, services: Iterable[ExportedService]) -> list[list[ExportedService]]:
        chunks: list[list[ExportedService]] = [[]]
        used = 0
        for svc in services:
            size = wire_size_bound(svc)
            if chunks[-1] and used + size > self._budget:
                chunks.append([])
                used = 0
            chunks[-1].append(svc)
            used += size
        return chunks

    def _plan_snapshot(self) -> None:
        self._version += 1
        self._floor = self._version
        self._need_snapshot = False
        self._sent = self._desired
        self._dirty = set()
        chunks = self._chunks(self._sent.values())
        for i, chunk in enumerate(chunks):
            self._outbox.append(
                Snapshot(
                    self.origin_site, self.epoch, self._version, tuple(chunk), i == len(chunks) - 1
                )
            )

    def _plan_deltas(self) -> None:
        old, new = self._sent, self._desired
        keys: Iterable[ServiceName]
        if self._dirty is None:
            keys = set(old).union(new) if old is not new else ()
        else:
            keys = self._dirty
        upserts: list[ExportedService] = []
        removals: list[ServiceName] = []
        for key in sorted(keys):
            after, before = new.get(key), old.get(key)
            if after is before or after == before:
                continue
            if after is None:
                removals.append(key)
            else:
                upserts.append(after)
        self._sent = new
        self._dirty = set()
        if not upserts and not removals:
            return
        items: list[ExportedService | ServiceName] = [*upserts, *removals]
        used, batch = 0, list[ExportedService | ServiceName]()
        batches: list[list[ExportedService | ServiceName]] = []
        for item in items:
            size = wire_size_bound(item)
            if batch and used + size > self._budget:
                batches.append(batch)
                batch, used = [], 0
            batch.append(item)
            used += size
        batches.append(batch)
        for batch in batches:
            base = self._version
            self._version += 1
            self._outbox.append(
                Delta(
                    self.origin_site,
                    self.epoch,
                    base,
                    self._version,
                    tuple(i for i in batch if isinstance(i, ExportedService)),
                    tuple(i for i in batch if isinstance(i, ServiceName)),
                )
            )

    # -- introspection -------------------------------------------------------------------

    @property
    def in_sync(self) -> bool:
        """Everything set so far has been sent and acknowledged."""
        return (
            not self._need_snapshot
            and not self._outbox
            and not self._in_flight
            and (self._desired is self._sent or self._desired == self._sent)
        )

    def oldest_unacked_at(self) -> float | None:
        """When the oldest unacknowledged batch was sent (``now`` of :meth:`next_message`)."""
        return self._in_flight[0].sent_at if self._in_flight else None

    def statistics(self) -> ExportStatistics:
        return ExportStatistics(
            epoch=self.epoch,
            last_sent_version=self._version,
            acked_version=self._acked,
            in_flight=len(self._in_flight),
            queued=len(self._outbox),
            snapshots_sent=self._snapshots,
            deltas_sent=self._deltas,
            nacks_received=self._nacks,
            last_nack_reason=self._last_nack,
        )
