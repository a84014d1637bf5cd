"""The worker's half of the snapshot protocol: apply the feed's messages to its copies.

See :mod:`gateway.workers.snapshot` for the protocol; this module rebuilds the values the
data plane reads and keeps, for an unchanged service or site, the object it already held.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import immutables

from discovery.model import EndpointKey, ServiceName
from discovery.snapshot import Catalog, CatalogEntry, SourceState
from gateway.cluster.health_checker import Failing as FailingMarks
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
from overlay.federation.import_ import ImportedService, ImportTable, PeerImports

NO_MARKS: FailingMarks = immutables.Map()
EMPTY_ENDPOINTS: immutables.Map[EndpointKey, CatalogEntry] = immutables.Map()
SNAPSHOT_MESSAGES = (CatalogPart, CatalogDelta, ImportsPart, ImportsDelta, Failing, FailingDelta)


@dataclass(frozen=True, slots=True)
class SnapshotVersion:
    """What a worker holds: the feed's epoch and each part's sequence number (-1: none)."""

    epoch: str
    catalog: int
    imports: int
    failing: int


def holds(held: SnapshotVersion, target: SnapshotVersion) -> bool:
    """Whether a worker at ``held`` has every change of the feed up to ``target`` (the same
    feed, each part at least as new): what a reload's answer waits for in each worker."""
    return (
        held.epoch == target.epoch
        and held.catalog >= target.catalog
        and held.imports >= target.imports
        and held.failing >= target.failing
    )


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
class _DeltaParts:
    """A delta that came in several messages, applied so far to a private copy (``into``:
    the catalog's services or the import table's peers, being mutated)."""

    seq: int
    next_index: int
    into: immutables.MapMutation[Any, Any]


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
        self._delta_parts: dict[str, _DeltaParts] = {}  # by part: "catalog", "imports"

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
                "catalog",
                (message.epoch, message.base, message.seq, message.index, message.final),
                self.catalog.services.mutate,
                lambda into: self._catalog_delta(message, into),
            )
        if isinstance(message, ImportsPart):
            return self._imports_part(message)
        if isinstance(message, ImportsDelta):
            return self._delta(
                "imports",
                (message.epoch, message.base, message.seq, message.index, message.final),
                self.imports.peers.mutate,
                lambda into: self._imports_delta(message, into),
            )
        if isinstance(message, Failing):
            return self._failing_part(message)
        if isinstance(message, FailingDelta):
            return self._delta(
                "failing",
                (message.epoch, message.base, message.version, 0, True),
                self.failing.mutate,
                lambda into: self._failing_delta(message, into),
            )
        raise ValueError(f"not a snapshot message: {type(message).__name__}")

    # -- common ---------------------------------------------------------------------------

    def _gap(self, part: str, reason: str) -> Change | NeedResync:
        self._delta_parts.pop(part, None)
        if part in self._waiting:
            return Change()
        self._waiting.add(part)
        return NeedResync(f"{part}: {reason}")

    def _delta(
        self,
        part: str,
        at: tuple[str, int, int, int, bool],
        start: Callable[[], immutables.MapMutation[Any, Any]],
        apply: Callable[[immutables.MapMutation[Any, Any]], None],
    ) -> Change | NeedResync:
        """One message of a delta, ``at`` = (epoch, base, seq, index, final).

        The first message starts a private copy of the current value (``start``: a map
        mutation), each applies its patches to it (``apply``), the final one also makes it
        current.  The held ``seq`` moves only then, so each message is checked against the
        same ``base``: a delta never lands on a value it was not computed from."""
        epoch, base, seq, index, final = at
        if part in self._waiting:
            return Change()
        if epoch != self._epochs[part]:
            return self._gap(part, f"delta of epoch {epoch!r}, holding {self._epochs[part]!r}")
        if base != self._seqs[part]:
            return self._gap(part, f"delta from {base}, holding {self._seqs[part]}")
        pending = self._delta_parts.get(part)
        if index == 0:
            pending = self._delta_parts[part] = _DeltaParts(seq, 0, start())
        elif pending is None or (pending.seq, pending.next_index) != (seq, index):
            return self._gap(part, f"delta part {index} out of order")
        pending.next_index += 1
        apply(pending.into)
        if not final:
            return Change()
        del self._delta_parts[part]
        self._seqs[part] = seq
        return Change(**{part: True})

    def _done(self, part: str, epoch: str, seq: int) -> Change:
        self._delta_parts.pop(part, None)
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

    def _catalog_delta(
        self,
        msg: CatalogDelta,
        services: immutables.MapMutation[ServiceName, immutables.Map[EndpointKey, CatalogEntry]],
    ) -> None:
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
        if msg.final:
            old = self.catalog
            self.catalog = Catalog(
                version=msg.version,
                sources=old.sources if msg.sources is None else self._sources(msg.sources),
                services=services.finish(),
                size=msg.size,
                ejected=old.ejected if msg.ejected is None else immutables.Map(msg.ejected),
            )

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

    def _imports_delta(
        self, msg: ImportsDelta, peers: immutables.MapMutation[str, PeerImports]
    ) -> None:
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
        if msg.final:
            for site in msg.removed:
                peers.pop(site, None)
            self.imports = ImportTable(grace=msg.grace, peers=peers.finish())

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

    def _failing_delta(
        self, msg: FailingDelta, marks: immutables.MapMutation[EndpointKey, str]
    ) -> None:
        for key in msg.cleared:
            marks.pop(key, None)
        for key, reason in msg.marked:
            marks[key] = reason
        self.failing = marks.finish()
