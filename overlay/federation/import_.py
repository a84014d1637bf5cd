"""Import: the receiver's state machine and the table of services imported from peers.

Two pure pieces, one per lifetime:

* :class:`ImportSession` lives as long as one federation stream.  It checks each snapshot or
  delta against what it holds, answers with an :class:`~overlay.federation.protocol.Ack` or
  :class:`~overlay.federation.protocol.Nack`, and reports what changed as an
  :class:`ImportUpdate`.
* :class:`ImportTable` outlives links.  It holds every peer's imported services with their
  origin site, version and freshness; when a link goes down the peer's entries are kept,
  marked stale, for ``grace`` seconds, then withdrawn by :meth:`ImportTable.expire`.  A
  resync (the snapshot on the next link) replaces the peer's entries whole, so nothing is
  duplicated and nothing withdrawn in the meantime survives.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType

import immutables

from discovery.model import ServiceName
from foundation.names import label_problem
from overlay.federation.import_merge import merge_site
from overlay.federation.protocol import (
    Ack,
    Delta,
    ExportedService,
    FederationProtocolError,
    Message,
    Nack,
    Snapshot,
)

DEFAULT_MAX_SERVICES = 1_000_000


@dataclass(frozen=True, slots=True)
class ImportUpdate:
    """What one applied snapshot (``full``: replaces everything) or delta changed."""

    origin_site: str
    epoch: str
    version: int
    full: bool
    upserts: tuple[ExportedService, ...]
    removals: tuple[ServiceName, ...] = ()


@dataclass(frozen=True, slots=True)
class ImportResult:
    """The reply to send (None for a non-final snapshot part) and the change to apply."""

    reply: Ack | Nack | None
    update: ImportUpdate | None


class ImportSession:
    """The receiver's state machine for one federation stream (pure, no I/O).

    Theory of operation
    -------------------
    The session starts empty and *unsynced*.  A :class:`Snapshot` (possibly in parts, same
    epoch and version, applied atomically at the part marked ``final``) replaces the state
    and is acked.  A :class:`Delta` is applied only if the session is synced, the epoch
    matches, ``base_version`` is exactly the version held and every removal names a service
    held; otherwise the session answers :class:`Nack`, becomes unsynced and nacks every
    further delta until a snapshot arrives (the exporter resends one on the first nack).
    Nothing is applied partially: a bad delta leaves the state as it was.

    Out-of-protocol input -- a reply type from the exporter, another origin site than the
    link's peer, a delta in the middle of a split snapshot, more than ``max_services``
    services -- raises :class:`FederationProtocolError`: the adapter resets the stream.
    """

    def __init__(self, expected_origin: str, *, max_services: int = DEFAULT_MAX_SERVICES) -> None:
        problem = label_problem(expected_origin)
        if problem:
            raise ValueError(f"site name: {problem}")
        self.expected_origin = expected_origin
        self.max_services = max_services
        self.epoch: str | None = None
        self.version = 0
        self._services: dict[ServiceName, ExportedService] = {}
        self._synced = False
        self._parts: dict[ServiceName, ExportedService] | None = None
        self._parts_id: tuple[str, int] | None = None

    @property
    def synced(self) -> bool:
        return self._synced

    @property
    def services(self) -> Mapping[ServiceName, ExportedService]:
        """The services held (read-only view; changes as messages are applied)."""
        return MappingProxyType(self._services)

    def receive(self, msg: Message) -> ImportResult:
        if isinstance(msg, Ack | Nack):
            raise FederationProtocolError(f"an exporter must not send a {type(msg).__name__}")
        if msg.origin_site != self.expected_origin:
            raise FederationProtocolError(
                f"peer {self.expected_origin!r} sent an export of {msg.origin_site!r}"
            )
        if isinstance(msg, Snapshot):
            return self._snapshot(msg)
        return self._delta(msg)

    def _snapshot(self, msg: Snapshot) -> ImportResult:
        ident = (msg.epoch, msg.version)
        if self._parts is None or self._parts_id != ident:
            self._parts, self._parts_id = {}, ident
        for svc in msg.services:
            if svc.service in self._parts:
                raise FederationProtocolError(f"snapshot parts repeat service {svc.service}")
            self._parts[svc.service] = svc
        if len(self._parts) > self.max_services:
            raise FederationProtocolError(f"snapshot exceeds {self.max_services} services")
        if not msg.final:
            return ImportResult(None, None)
        self._services, self._parts, self._parts_id = self._parts, None, None
        self.epoch, self.version, self._synced = msg.epoch, msg.version, True
        update = ImportUpdate(
            msg.origin_site, msg.epoch, msg.version, True, tuple(self._services.values())
        )
        return ImportResult(Ack(msg.epoch, msg.version), update)

    def _nack(self, msg: Delta, reason: str) -> ImportResult:
        self._synced = False
        return ImportResult(Nack(msg.epoch, msg.version, reason), None)

    def _delta(self, msg: Delta) -> ImportResult:
        if self._parts is not None:
            raise FederationProtocolError("delta in the middle of a split snapshot")
        if not self._synced:
            return self._nack(msg, "not synced: waiting for a snapshot")
        if msg.epoch != self.epoch:
            return self._nack(msg, f"epoch {msg.epoch!r} but holding {self.epoch!r}")
        if msg.base_version != self.version:
            return self._nack(msg, f"base version {msg.base_version} but holding {self.version}")
        missing = [r for r in msg.removals if r not in self._services]
        if missing:
            return self._nack(msg, f"removes {missing[0]}, which is not held")
        added = sum(1 for s in msg.upserts if s.service not in self._services)
        if len(self._services) + added - len(msg.removals) > self.max_services:
            raise FederationProtocolError(f"delta exceeds {self.max_services} services")
        for name in msg.removals:
            del self._services[name]
        for svc in msg.upserts:
            self._services[svc.service] = svc
        self.version = msg.version
        update = ImportUpdate(
            msg.origin_site, msg.epoch, msg.version, False, msg.upserts, msg.removals
        )
        return ImportResult(Ack(msg.epoch, msg.version), update)


# --- the table of imports across links ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class ImportedService:
    """A peer's service as this site imported it."""

    origin_site: str
    service: ExportedService
    version: int  # the federation version that last changed this entry


@dataclass(frozen=True, slots=True)
class PeerImports:
    """Everything imported from one peer site, with its freshness.

    ``confirmed_at`` is the last ``now`` at which a live link vouched for this state (a
    message applied, or a liveness confirmation); ``stale_since`` is set when the link went
    down and cleared by the next resync.
    """

    site: str
    epoch: str
    version: int
    services: immutables.Map[ServiceName, ImportedService]
    confirmed_at: float
    stale_since: float | None = None
    #: The services that carry routes, and their route texts (federation version 2); kept
    #: by :meth:`ImportTable.apply` from the changes alone, and the same object while no
    #: route changed, so a reader sees a route change by identity, without a walk of every
    #: service on every health delta.
    routes: immutables.Map[ServiceName, tuple[str, ...]] = field(default_factory=immutables.Map)

    @property
    def stale(self) -> bool:
        return self.stale_since is not None


def _routes_after(
    routes: immutables.Map[ServiceName, tuple[str, ...]], update: ImportUpdate
) -> immutables.Map[ServiceName, tuple[str, ...]]:
    """``routes`` after a delta: the same object unless some service's routes changed."""
    touched = [n for n in update.removals if n in routes]
    touched += [s.service for s in update.upserts if s.routes != routes.get(s.service, ())]
    if not touched:
        return routes
    m = routes.mutate()
    for name in update.removals:
        m.pop(name, None)
    for svc in update.upserts:
        if svc.routes:
            m[svc.service] = svc.routes
        else:
            m.pop(svc.service, None)
    return m.finish()


@dataclass(frozen=True, slots=True)
class ImportTable:
    """All peers' imports (frozen; every method returns a new table).

    ``replicas`` holds one copy per replica of a peer site, keyed by the replica's key (the
    site name for a one-gateway site); ``peers`` is the per-site view everyone reads, each
    site merged from its copies by :func:`~overlay.federation.import_merge.merge_site`.
    ``replica`` arguments name the copy (default: the site name, the one-gateway case).
    """

    grace: float
    peers: immutables.Map[str, PeerImports] = field(default_factory=immutables.Map)
    replicas: immutables.Map[str, PeerImports] = field(default_factory=immutables.Map)

    def _merged(self, replicas: immutables.Map[str, PeerImports], sites: set[str]) -> ImportTable:
        """A table with ``replicas`` and ``sites`` merged again from their copies."""
        peers = self.peers.mutate()
        for site in sites:
            copies = [(k, c) for k, c in replicas.items() if c.site == site]
            merged = merge_site(copies, peers.get(site))
            if merged is None:
                peers.pop(site, None)
            elif peers.get(site) is not merged:
                peers[site] = merged
        return replace(self, peers=peers.finish(), replicas=replicas)

    def apply(self, update: ImportUpdate, now: float, replica: str | None = None) -> ImportTable:
        """Apply what an :class:`ImportSession` accepted; the copy becomes fresh."""
        site = update.origin_site
        key = site if replica is None else replica
        old = self.replicas.get(key)
        if update.full:
            kept = old.services if old is not None and old.epoch == update.epoch else None
            entries: dict[ServiceName, ImportedService] = {}
            for svc in update.upserts:
                prev = kept.get(svc.service) if kept is not None else None
                same = prev is not None and prev.service == svc
                entries[svc.service] = (
                    prev
                    if same and prev is not None
                    else ImportedService(site, svc, update.version)
                )
            services = immutables.Map(entries)
            fresh = {s.service: s.routes for s in update.upserts if s.routes}
            old_routes = old.routes if old is not None else None
            same = old_routes is not None and dict(old_routes) == fresh
            routes = old_routes if same and old_routes is not None else immutables.Map(fresh)
        else:
            if old is None or old.epoch != update.epoch:
                raise ValueError(f"delta for {key!r} without its snapshot")
            with old.services.mutate() as m:
                for name in update.removals:
                    m.pop(name, None)
                for svc in update.upserts:
                    m[svc.service] = ImportedService(site, svc, update.version)
                services = m.finish()
            routes = _routes_after(old.routes, update)
        peer = PeerImports(site, update.epoch, update.version, services, now, None, routes)
        return self._merged(self.replicas.set(key, peer), {site})

    def confirm(self, site: str, now: float, replica: str | None = None) -> ImportTable:
        """A live link vouches for ``site``'s copy (e.g. a PING answered)."""
        key = site if replica is None else replica
        peer = self.replicas.get(key)
        if peer is None or peer.stale:
            return self
        return self._merged(self.replicas.set(key, replace(peer, confirmed_at=now)), {site})

    def link_down(self, site: str, now: float, replica: str | None = None) -> ImportTable:
        """The link to ``site`` (its replica ``replica``) is down: keep its entries, stale,
        until ``now + grace``; the site stays fresh while another replica's copy is."""
        key = site if replica is None else replica
        peer = self.replicas.get(key)
        if peer is None or peer.stale:
            return self
        return self._merged(self.replicas.set(key, replace(peer, stale_since=now)), {site})

    def withdraw(self, site: str, replica: str | None = None) -> ImportTable:
        """Drop ``site`` at once, or only its replica ``replica``'s copy (e.g. the peer, or
        that replica, was removed from config)."""
        if replica is None:
            gone = [k for k, c in self.replicas.items() if c.site == site]
        else:
            gone = [replica] if replica in self.replicas else []
        if not gone:
            if replica is None and site in self.peers:  # a table built from ``peers`` alone
                return replace(self, peers=self.peers.delete(site))
            return self
        m = self.replicas.mutate()
        for key in gone:
            del m[key]
        return self._merged(m.finish(), {site})

    def expires_at(self, site: str) -> float | None:
        peer = self.peers.get(site)
        if peer is None or peer.stale_since is None:
            return None
        return peer.stale_since + self.grace

    def _copy_expires_at(self, copy: PeerImports) -> float | None:
        return None if copy.stale_since is None else copy.stale_since + self.grace

    def expire(self, now: float) -> ImportTable:
        """Withdraw every copy that has been stale for ``grace`` seconds or more (a site
        goes with its last copy)."""
        gone = [
            k
            for k, c in self.replicas.items()
            if (t := self._copy_expires_at(c)) is not None and now >= t
        ]
        if not gone:
            return self
        sites = {self.replicas[k].site for k in gone}
        m = self.replicas.mutate()
        for key in gone:
            del m[key]
        return self._merged(m.finish(), sites)

    def next_expiry(self) -> float | None:
        """When :meth:`expire` next has something to do (for the owner's timer)."""
        times = [t for c in self.replicas.values() if (t := self._copy_expires_at(c)) is not None]
        return min(times, default=None)

    def is_usable(self, site: str) -> bool:
        """Whether ``site``'s imports may be routed to: known and not stale."""
        peer = self.peers.get(site)
        return peer is not None and not peer.stale

    def entries(self) -> Iterator[ImportedService]:
        for peer in self.peers.values():
            yield from peer.services.values()
