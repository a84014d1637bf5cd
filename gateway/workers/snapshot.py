"""Versioned snapshots from the supervisor to its workers (sans-IO, both ends).

The supervisor owns discovery, health checks and federation; each worker routes with copies
of three of their results: the catalog, the import table and the failing marks.  This module
turns those values into messages (:class:`SnapshotFeed`) and back (:class:`SnapshotReceiver`).

Theory of operation
-------------------
Each part has a sequence number within the feed's ``epoch`` (random per feed), bumped when a
*different object* is published (the values are immutable, so identity is change).  A worker's
state is a :class:`SnapshotVersion`.  :meth:`SnapshotFeed.messages_for` brings a worker from
its version to the current one:

* **Deltas when it is close.**  The feed keeps the value at its last *step* (an anchor) and a
  short history of steps.  When a worker asks and the value moved since the anchor, the delta
  anchor -> current is computed once (diffing persistent maps by identity, see
  :mod:`gateway.workers.snapshot_encode`), kept in the history and handed to every worker at
  the anchor; several publishes between two asks make one step, so a burst costs one diff.
  A worker a few steps behind gets the chain of steps.
* **A full snapshot otherwise** (a new worker, another epoch, a version older than the
  history, a delta too heavy), split into parts of about ``budget`` bytes, built once per
  version and shared by every worker that needs it.

The receiver applies a delta only when it holds exactly its ``base``; a gap or another epoch
answers :class:`NeedResync` (once, until a full snapshot of that part arrives), and the
worker sends :class:`~gateway.workers.messages.Resync`.  Full parts must come in order; the
part marked ``final`` applies them all at once, so a reader never sees half a snapshot.

What the worker rebuilds is what the data plane reads: a :class:`~discovery.snapshot.Catalog`
with ``services`` (an unchanged service keeps its map object, so the route fold's identity
diff stays incremental), ``sources``, ``ejected``, ``version`` and ``size`` -- not ``views``
(per-source reports, only read by the admin API's provenance, which runs in the supervisor);
an :class:`~overlay.federation.import_.ImportTable` with the merged per-site ``peers`` and no
replica copies (expiry and replica merging stay in the supervisor, whose changes arrive as
deltas); the failing marks.  Times (source staleness, import freshness) are shifted by the
worker's clock offset, so its own ``trio.current_time()`` compares with them correctly.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import immutables
import trio

from discovery.model import EndpointKey, ServiceName
from discovery.snapshot import Catalog, CatalogEntry, SourceState
from gateway.cluster.health_checker import Failing as FailingMarks
from gateway.workers.channel import encode
from gateway.workers.messages import (
    CatalogDelta,
    CatalogPart,
    Failing,
    FailingDelta,
    ImportsDelta,
    ImportsPart,
    SiteHeader,
    entry_of,
)
from gateway.workers.snapshot_encode import (
    DEFAULT_BUDGET,
    catalog_delta,
    catalog_full,
    failing_delta,
    failing_full,
    imports_delta,
    imports_full,
)
from overlay.federation.import_ import ImportedService, ImportTable, PeerImports

T = TypeVar("T")
DEFAULT_HISTORY = 8
NO_MARKS: FailingMarks = immutables.Map()
EMPTY_ENDPOINTS: immutables.Map[EndpointKey, CatalogEntry] = immutables.Map()
SNAPSHOT_MESSAGES = (CatalogPart, CatalogDelta, ImportsPart, ImportsDelta, Failing, FailingDelta)


def clock_base() -> float:
    """This process's trio clock minus the system-wide monotonic clock (``perf_counter`` is
    ``CLOCK_MONOTONIC`` on Linux, the clock trio's own is offset from).  The worker's
    ``clock_offset`` is its base minus the supervisor's."""
    return trio.current_time() - time.perf_counter()


@dataclass(frozen=True, slots=True)
class SnapshotVersion:
    """What a worker holds: the feed's epoch and each part's sequence number (-1: none)."""

    epoch: str
    catalog: int
    imports: int
    failing: int


@dataclass(frozen=True, slots=True)
class Change:
    """What a message changed (publish those parts); all False: nothing yet (a non-final
    part, or a delta ignored while waiting for a resync)."""

    catalog: bool = False
    imports: bool = False
    failing: bool = False


@dataclass(frozen=True, slots=True)
class NeedResync:
    """The worker must ask for full snapshots (send ``Resync(reason)``)."""

    reason: str


Diff = Callable[[T, T, int, int], object | None]
Full = Callable[[T, int], list[object]]


class _Track(Generic[T]):
    """One part's current value, its anchor, step history and cached full snapshot."""

    def __init__(self, value: T, diff: Diff[T], full: Full[T], history: int) -> None:
        self.value = value
        self.seq = 0
        self._diff = diff
        self._full_of = full
        self._anchor: tuple[int, T] = (0, value)
        self._steps: deque[tuple[int, int, object | None]] = deque(maxlen=history)
        self._full: tuple[int, list[object]] | None = None
        #: Work counters (the tests and the benchmark read them).
        self.deltas_built = 0
        self.fulls_built = 0

    def publish(self, value: T) -> None:
        if value is not self.value:
            self.value = value
            self.seq += 1

    def messages(self, held: int | None) -> list[object]:
        if held == self.seq:
            return []
        anchor_seq, anchor_value = self._anchor
        if anchor_seq != self.seq:
            self._steps.append(
                (anchor_seq, self.seq, self._diff(anchor_value, self.value, anchor_seq, self.seq))
            )
            self._anchor = (self.seq, self.value)
            self.deltas_built += 1
        if held is not None:
            chain: list[object] = []
            at = held
            for start, end, delta in self._steps:
                if start == at and delta is not None:
                    chain.append(delta)
                    at = end
            if at == self.seq:
                return chain
        if self._full is None or self._full[0] != self.seq:
            self._full = (self.seq, self._full_of(self.value, self.seq))
            self.fulls_built += 1
        return list(self._full[1])

    def held(self) -> list[object]:
        """The messages this track keeps (its steps and its full snapshot)."""
        out = [delta for _s, _e, delta in self._steps if delta is not None]
        return out + (self._full[1] if self._full is not None else [])


class SnapshotFeed:
    """The supervisor's side: the current values and the messages each worker needs.

    ``publish_*`` only keep the new value (cheap, call it on every change); the work happens
    in :meth:`messages_for`, once per version whatever the number of workers (and in
    :meth:`frames_for`, which pickles each message once too).
    """

    def __init__(
        self,
        *,
        catalog: Catalog | None = None,
        imports: ImportTable | None = None,
        failing: FailingMarks = NO_MARKS,
        budget: int = DEFAULT_BUDGET,
        history: int = DEFAULT_HISTORY,
        epoch: str | None = None,
    ) -> None:
        if budget < 1024:
            raise ValueError(f"budget must be at least 1024 bytes, got {budget}")
        self.epoch = epoch if epoch is not None else secrets.token_hex(6)
        self.budget = budget
        e = self.epoch
        self.catalog = _Track[Catalog](
            catalog if catalog is not None else Catalog(),
            lambda old, new, base, seq: catalog_delta(old, new, e, base, seq, budget),
            lambda value, seq: list(catalog_full(value, e, seq, budget)),
            history,
        )
        self.imports = _Track[ImportTable](
            imports if imports is not None else ImportTable(grace=0.0),
            lambda old, new, base, seq: imports_delta(old, new, e, base, seq, budget),
            lambda value, seq: list(imports_full(value, e, seq, budget)),
            history,
        )
        self.failing = _Track[FailingMarks](
            failing,
            lambda old, new, base, seq: failing_delta(old, new, e, base, seq, budget),
            lambda value, seq: list(failing_full(value, e, seq, budget)),
            history,
        )
        self._frames: dict[int, tuple[object, bytes]] = {}

    def publish_catalog(self, catalog: Catalog) -> None:
        self.catalog.publish(catalog)

    def publish_imports(self, table: ImportTable, now: float) -> None:
        """``now`` (the supervisor's clock): copies already past their grace are dropped
        here, so a worker never receives a site it would have to expire at once."""
        self.imports.publish(table.expire(now))

    def publish_failing(self, failing: FailingMarks) -> None:
        self.failing.publish(failing)

    @property
    def version(self) -> SnapshotVersion:
        """The current state (what a worker holds after :meth:`messages_for`)."""
        return SnapshotVersion(self.epoch, self.catalog.seq, self.imports.seq, self.failing.seq)

    def messages_for(self, worker_version: SnapshotVersion | None) -> list[object]:
        """What brings a worker at ``worker_version`` (None: new) to :attr:`version`."""
        v = (
            worker_version
            if worker_version is not None and worker_version.epoch == self.epoch
            else None
        )
        return [
            *self.catalog.messages(None if v is None else v.catalog),
            *self.imports.messages(None if v is None else v.imports),
            *self.failing.messages(None if v is None else v.failing),
        ]

    def frames_for(self, worker_version: SnapshotVersion | None) -> list[bytes]:
        """:meth:`messages_for` as frames for :meth:`~gateway.workers.channel.Channel.
        send_encoded`: each message is pickled once, however many workers it goes to."""
        frames = []
        for message in self.messages_for(worker_version):
            hit = self._frames.get(id(message))
            if hit is None or hit[0] is not message:
                hit = self._frames[id(message)] = (message, encode(message))
            frames.append(hit[1])
        live = {id(m) for track in (self.catalog, self.imports, self.failing) for m in track.held()}
        for key in [k for k in self._frames if k not in live]:
            del self._frames[key]
        return frames


# --- the worker's side ---------------------------------------------------------------------


@dataclass
class _CatalogParts:
    epoch: str
    seq: int
    next_index: int
    services: dict[ServiceName, immutables.MapMutation[EndpointKey, CatalogEntry]]
    ejected: dict[EndpointKey, str]


@dataclass
class _ImportsParts:
    epoch: str
    seq: int
    next_index: int
    headers: dict[str, SiteHeader]
    services: dict[str, dict[ServiceName, ImportedService]]
    routes: dict[str, dict[ServiceName, tuple[str, ...]]]


@dataclass
class _FailingParts:
    epoch: str
    seq: int
    next_index: int
    marks: dict[EndpointKey, str]


class SnapshotReceiver:
    """The worker's side: applies the feed's messages to its copies (see the module doc)."""

    def __init__(self, *, clock_offset: float) -> None:
        self.clock_offset = clock_offset
        self.catalog = Catalog()
        self.imports = ImportTable(grace=0.0)
        self.failing: FailingMarks = NO_MARKS
        self._epochs = {"catalog": "", "imports": "", "failing": ""}
        self._seqs = {"catalog": -1, "imports": -1, "failing": -1}
        self._waiting: set[str] = set()  # parts with a gap, waiting for a full snapshot
        self._catalog_parts: _CatalogParts | None = None
        self._imports_parts: _ImportsParts | None = None
        self._failing_parts: _FailingParts | None = None

    @property
    def version(self) -> SnapshotVersion:
        """What this worker holds (the catalog's epoch; -1: nothing of that part yet)."""
        return SnapshotVersion(
            self._epochs["catalog"],
            self._seqs["catalog"],
            self._seqs["imports"],
            self._seqs["failing"],
        )

    def apply(self, message: object) -> Change | NeedResync:
        """Apply one snapshot message (``ValueError`` for any other message type)."""
        if isinstance(message, CatalogPart):
            return self._catalog_part(message)
        if isinstance(message, CatalogDelta):
            return self._delta(
                "catalog", message.epoch, message.base, lambda: self._catalog_delta(message)
            )
        if isinstance(message, ImportsPart):
            return self._imports_part(message)
        if isinstance(message, ImportsDelta):
            return self._delta(
                "imports", message.epoch, message.base, lambda: self._imports_delta(message)
            )
        if isinstance(message, Failing):
            return self._failing_part(message)
        if isinstance(message, FailingDelta):
            return self._delta(
                "failing", message.epoch, message.base, lambda: self._failing_delta(message)
            )
        raise ValueError(f"not a snapshot message: {type(message).__name__}")

    # -- common ---------------------------------------------------------------------------

    def _gap(self, part: str, reason: str) -> Change | NeedResync:
        if part in self._waiting:
            return Change()
        self._waiting.add(part)
        return NeedResync(f"{part}: {reason}")

    def _delta(
        self, part: str, epoch: str, base: int, apply: Callable[[], int]
    ) -> Change | NeedResync:
        if part in self._waiting:
            return Change()
        if epoch != self._epochs[part]:
            return self._gap(part, f"delta of epoch {epoch!r}, holding {self._epochs[part]!r}")
        if base != self._seqs[part]:
            return self._gap(part, f"delta from {base}, holding {self._seqs[part]}")
        self._seqs[part] = apply()
        return Change(**{part: True})

    def _done(self, part: str, epoch: str, seq: int) -> Change:
        self._epochs[part], self._seqs[part] = epoch, seq
        self._waiting.discard(part)
        return Change(**{part: True})

    def _shift(self, t: float | None) -> float | None:
        return None if t is None else t + self.clock_offset

    def _source(self, s: SourceState) -> SourceState:
        return replace(
            s,
            confirmed_at=s.confirmed_at + self.clock_offset,
            stale_since=self._shift(s.stale_since),
            grace_until=self._shift(s.grace_until),
        )

    def _sources(self, states: tuple[SourceState, ...]) -> immutables.Map[str, SourceState]:
        return immutables.Map({s.name: self._source(s) for s in states})

    # -- catalog --------------------------------------------------------------------------

    def _catalog_part(self, msg: CatalogPart) -> Change | NeedResync:
        parts = self._catalog_parts
        if msg.index == 0:
            parts = self._catalog_parts = _CatalogParts(msg.epoch, msg.seq, 0, {}, {})
        elif parts is None or (parts.epoch, parts.seq, parts.next_index) != (
            msg.epoch,
            msg.seq,
            msg.index,
        ):
            self._catalog_parts = None
            return self._gap("catalog", f"full catalog part {msg.index} out of order")
        parts.next_index += 1
        for service, rows in msg.services:
            into = parts.services.get(service)
            if into is None:
                into = parts.services[service] = EMPTY_ENDPOINTS.mutate()
            into.update(entry_of(service, row) for row in rows)
        parts.ejected.update(msg.ejected)
        if not msg.final:
            return Change()
        self._catalog_parts = None
        header = msg.header
        if header is None:
            return self._gap("catalog", "final catalog part without its header")
        self.catalog = Catalog(
            version=header.version,
            sources=self._sources(header.sources),
            services=immutables.Map({s: m.finish() for s, m in parts.services.items()}),
            size=header.size,
            ejected=immutables.Map(parts.ejected),
        )
        return self._done("catalog", msg.epoch, msg.seq)

    def _catalog_delta(self, msg: CatalogDelta) -> int:
        old = self.catalog
        with old.services.mutate() as services:
            for patch in msg.services:
                service = patch.service
                if patch.replace:
                    if patch.upserts:
                        services[service] = immutables.Map(
                            entry_of(service, row) for row in patch.upserts
                        )
                    else:
                        services.pop(patch.service, None)
                    continue
                with services.get(patch.service, immutables.Map()).mutate() as endpoints:
                    for key in patch.removals:
                        endpoints.pop(key, None)
                    endpoints.update(entry_of(service, row) for row in patch.upserts)
                    changed = endpoints.finish()
                if len(changed):
                    services[patch.service] = changed
                else:
                    services.pop(patch.service, None)
            new_services = services.finish()
        self.catalog = Catalog(
            version=msg.version,
            sources=old.sources if msg.sources is None else self._sources(msg.sources),
            services=new_services,
            size=msg.size,
            ejected=old.ejected if msg.ejected is None else immutables.Map(msg.ejected),
        )
        return msg.seq

    # -- imports --------------------------------------------------------------------------

    def _peer(
        self,
        h: SiteHeader,
        services: immutables.Map[ServiceName, ImportedService],
        routes: immutables.Map[ServiceName, tuple[str, ...]],
    ) -> PeerImports:
        stale = self._shift(h.stale_since)
        return PeerImports(
            h.site, h.epoch, h.version, services, h.confirmed_at + self.clock_offset, stale, routes
        )

    def _imports_part(self, msg: ImportsPart) -> Change | NeedResync:
        parts = self._imports_parts
        if msg.index == 0:
            parts = self._imports_parts = _ImportsParts(msg.epoch, msg.seq, 0, {}, {}, {})
        elif parts is None or (parts.epoch, parts.seq, parts.next_index) != (
            msg.epoch,
            msg.seq,
            msg.index,
        ):
            self._imports_parts = None
            return self._gap("imports", f"full imports part {msg.index} out of order")
        parts.next_index += 1
        parts.headers.update((h.site, h) for h in msg.sites)
        for site, imported in msg.services:
            into = parts.services.setdefault(site, {})
            for imp in imported:
                into[imp.service.service] = imp
        for site, texts in msg.routes:
            parts.routes.setdefault(site, {}).update(texts)
        if not msg.final:
            return Change()
        self._imports_parts = None
        peers = {
            site: self._peer(
                h,
                immutables.Map(parts.services.get(site, {})),
                immutables.Map(parts.routes.get(site, {})),
            )
            for site, h in parts.headers.items()
        }
        self.imports = ImportTable(grace=msg.grace, peers=immutables.Map(peers))
        return self._done("imports", msg.epoch, msg.seq)

    def _imports_delta(self, msg: ImportsDelta) -> int:
        old = self.imports
        with old.peers.mutate() as peers:
            for patch in msg.sites:
                was = peers.get(patch.header.site)
                if patch.replace or was is None:
                    services = immutables.Map({s.service.service: s for s in patch.upserts})
                else:
                    with was.services.mutate() as m:
                        for name in patch.removals:
                            m.pop(name, None)
                        for imp in patch.upserts:
                            m[imp.service.service] = imp
                        services = m.finish()
                if patch.routes is not None:
                    routes = immutables.Map(patch.routes)
                else:
                    routes = was.routes if was is not None else immutables.Map()
                peers[patch.header.site] = self._peer(patch.header, services, routes)
            for site in msg.removed:
                peers.pop(site, None)
            self.imports = ImportTable(grace=msg.grace, peers=peers.finish())
        return msg.seq

    # -- failing marks --------------------------------------------------------------------

    def _failing_part(self, msg: Failing) -> Change | NeedResync:
        parts = self._failing_parts
        if msg.index == 0:
            parts = self._failing_parts = _FailingParts(msg.epoch, msg.version, 0, {})
        elif parts is None or (parts.epoch, parts.seq, parts.next_index) != (
            msg.epoch,
            msg.version,
            msg.index,
        ):
            self._failing_parts = None
            return self._gap("failing", f"failing part {msg.index} out of order")
        parts.next_index += 1
        parts.marks.update(msg.marks)
        if not msg.final:
            return Change()
        self._failing_parts = None
        self.failing = immutables.Map(parts.marks)
        return self._done("failing", msg.epoch, msg.version)

    def _failing_delta(self, msg: FailingDelta) -> int:
        with self.failing.mutate() as m:
            for key in msg.cleared:
                m.pop(key, None)
            for key, reason in msg.marked:
                m[key] = reason
            self.failing = m.finish()
        return msg.version
