"""The catalog snapshot: one frozen value holding every source's view and the merged view.

Why persistent maps: a snapshot is published to many readers and replaced on every change.
Copying a 100k-endpoint dict per change would make each update cost O(catalog); the HAMT maps
of :mod:`immutables` share structure between versions, so a change costs O(change x log n) and
old snapshots stay valid for whoever still holds them.

Layout (all maps are ``immutables.Map``):

* ``sources``: source name -> :class:`SourceState` (version, last full confirmation, staleness);
* ``views``: source name -> (EndpointKey -> :class:`Report`), what each source currently says,
  kept even for an expired source so that a later ``SourceFresh`` can bring it back;
* ``services``: ServiceName -> (EndpointKey -> :class:`CatalogEntry`), the merged view: one
  entry per endpoint key reported by at least one non-expired source (see
  :mod:`discovery.merge`).

Freshness is derived, not stored per entry: an entry is *stale* when every source that reports
it is stale.  That makes ``SourceStale``/``SourceFresh`` O(1) instead of O(endpoints).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

import immutables

from discovery.model import Endpoint, EndpointKey, Provenance, ServiceName


@dataclass(frozen=True, slots=True)
class Report:
    """What one source says about one endpoint, and when that fact last changed."""

    endpoint: Endpoint
    version: str
    confirmed_at: float


@dataclass(frozen=True, slots=True)
class SourceState:
    """A source's standing in the catalog.

    ``version`` and ``confirmed_at`` are those of the source's last confirmation of its *whole*
    view (Resynced or SourceFresh); incremental events only change the per-endpoint reports.
    ``stale_since``/``grace_until`` are set by SourceStale (the grace is taken from the policy
    at that moment); ``expired`` is set by :func:`discovery.catalog.expire` once the grace has
    run out, which hides the source's view from the merged view.
    """

    name: str
    version: str = ""
    confirmed_at: float = 0.0
    stale_since: float | None = None
    grace_until: float | None = None
    reason: str = ""
    expired: bool = False

    @property
    def stale(self) -> bool:
        return self.stale_since is not None

    def usable(self, now: float) -> bool:
        """Whether endpoints of this source may still be routed to at ``now``."""
        if self.expired:
            return False
        return self.grace_until is None or now < self.grace_until


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """One endpoint of the merged view.

    ``endpoint`` carries the attributes of ``sources[0]``, the highest-precedence source that
    reports it; ``sources`` lists every non-expired source reporting it, in precedence order.
    """

    endpoint: Endpoint
    sources: tuple[str, ...]

    @property
    def key(self) -> EndpointKey:
        return self.endpoint.key


EMPTY_SOURCES: immutables.Map[str, SourceState] = immutables.Map()
EMPTY_VIEWS: immutables.Map[str, immutables.Map[EndpointKey, Report]] = immutables.Map()
EMPTY_EJECTED: immutables.Map[EndpointKey, str] = immutables.Map()
EMPTY_SERVICES: immutables.Map[ServiceName, immutables.Map[EndpointKey, CatalogEntry]] = (
    immutables.Map()
)


@dataclass(frozen=True, slots=True)
class Catalog:
    """An immutable catalog snapshot.  ``Catalog()`` is the empty catalog at version 0.

    ``version`` increases by one with every change (never on a no-op), so readers can tell
    snapshots apart cheaply and a subscriber that skipped versions knows it did.
    """

    version: int = 0
    sources: immutables.Map[str, SourceState] = EMPTY_SOURCES
    views: immutables.Map[str, immutables.Map[EndpointKey, Report]] = EMPTY_VIEWS
    services: immutables.Map[ServiceName, immutables.Map[EndpointKey, CatalogEntry]] = (
        EMPTY_SERVICES
    )
    size: int = 0
    #: Endpoints the gateway took out of rotation itself (passive outlier detection), with
    #: the reason; not a source's fact, so it never bumps ``version`` (see
    #: :func:`gateway.cluster.outlier_detector.with_ejections`).
    ejected: immutables.Map[EndpointKey, str] = EMPTY_EJECTED

    def __len__(self) -> int:
        return self.size

    def get(self, key: EndpointKey) -> CatalogEntry | None:
        endpoints = self.services.get(key.service)
        return None if endpoints is None else endpoints.get(key)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, EndpointKey) and self.get(key) is not None

    def service_names(self) -> list[ServiceName]:
        return sorted(self.services.keys())

    def endpoints(self, service: ServiceName) -> list[CatalogEntry]:
        """Every listed endpoint of ``service`` (healthy or not, stale or not), sorted."""
        endpoints = self.services.get(service)
        if endpoints is None:
            return []
        return [endpoints[k] for k in sorted(endpoints.keys())]

    def entries(self) -> Iterator[CatalogEntry]:
        """Every listed endpoint, in no particular order."""
        for endpoints in self.services.values():
            yield from endpoints.values()

    def source(self, name: str) -> SourceState | None:
        return self.sources.get(name)

    def is_stale(self, entry: CatalogEntry) -> bool:
        """Stale = no source that reports the entry is currently confirming it."""
        return all(self._state(s).stale for s in entry.sources)

    def is_routable(self, entry: CatalogEntry, now: float) -> bool:
        """Healthy, not ejected, and at least one reporting source is fresh or within its
        stale grace."""
        if self.ejected and entry.key in self.ejected:
            return False
        return entry.endpoint.healthy and any(self._state(s).usable(now) for s in entry.sources)

    def ejection(self, entry: CatalogEntry) -> str | None:
        """Why the gateway took ``entry`` out of rotation, if it did."""
        return self.ejected.get(entry.key) if self.ejected else None

    def with_ejected(self, ejected: immutables.Map[EndpointKey, str]) -> Catalog:
        """The same snapshot with ``ejected`` as the gateway's own ejections."""
        return replace(self, ejected=ejected)

    def provenance(self, entry: CatalogEntry) -> tuple[Provenance, ...]:
        """Who reports ``entry``, with each source's version and last confirmation time."""
        out: list[Provenance] = []
        for name in entry.sources:
            report = self.views[name][entry.key]
            state = self._state(name)
            confirmed = max(report.confirmed_at, state.confirmed_at)
            out.append(Provenance(name, report.version, confirmed))
        return tuple(out)

    def confirmed_at(self, entry: CatalogEntry) -> float:
        """The latest time any reporting source confirmed ``entry``."""
        return max(p.confirmed_at for p in self.provenance(entry))

    def _state(self, name: str) -> SourceState:
        state = self.sources.get(name)
        return state if state is not None else SourceState(name)
