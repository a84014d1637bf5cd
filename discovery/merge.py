"""Source precedence: how several sources' reports of one endpoint become one merged entry.

Rule (documented in README "Discovery"): an endpoint is identified by
``EndpointKey(service, address, port)``.  When several sources report the same key, the merged
entry takes *all* attributes (protocol, health, weight, SPIFFE ID, locality, metadata) from the
highest-precedence source, and lists every reporting source in precedence order.

Precedence is the order of ``[[sources]]`` in the gateway config (first = highest): an operator
who lists ``static`` first can pin or override what Consul or mDNS says.  Sources the policy
does not name rank after the named ones, by name, so the result is always deterministic.

Precedence deliberately ignores freshness: a stale source keeps its rank until its grace runs
out and it expires.  That keeps SourceStale/SourceFresh O(1) and avoids attributes flapping when
a source blips.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import immutables

from discovery.model import EndpointKey, ServiceName
from discovery.snapshot import CatalogEntry, Report, SourceState

DEFAULT_GRACE_S = 60.0
"""Stale grace for sources whose config has no ``stale_grace_s`` (static, mdns)."""

MAX_ENDPOINTS_PER_SOURCE = 250_000
"""A source reporting more than this is refused (its previous view is kept): bounded memory."""


@dataclass(frozen=True, slots=True)
class Policy:
    """Fixed for a catalog's life: precedence order, stale grace per source, limits."""

    order: tuple[str, ...] = ()
    grace_s: tuple[tuple[str, float], ...] = ()
    default_grace_s: float = DEFAULT_GRACE_S
    max_endpoints_per_source: int = MAX_ENDPOINTS_PER_SOURCE

    @classmethod
    def from_sources(
        cls,
        sources: Sequence[tuple[str, float | None]],
        *,
        default_grace_s: float = DEFAULT_GRACE_S,
    ) -> Policy:
        """Precedence = the order of ``sources`` (name, own stale grace or ``None`` for the
        default); see :func:`discovery.sources.config.precedence`.

        Plain values, not source configs: the merge rule must not depend on what any one
        source's configuration looks like.
        """
        grace = tuple((name, g) for name, g in sources if g is not None)
        return cls(tuple(name for name, _ in sources), grace, default_grace_s)

    def rank(self, source: str) -> tuple[int, str]:
        try:
            return (self.order.index(source), "")
        except ValueError:
            return (len(self.order), source)

    def grace_for(self, source: str) -> float:
        for name, grace in self.grace_s:
            if name == source:
                return grace
        return self.default_grace_s

    def ordered(self, sources: Iterable[str]) -> list[str]:
        return sorted(sources, key=self.rank)


def merge_entry(
    key: EndpointKey,
    ordered_sources: Sequence[str],
    views: Mapping[str, Mapping[EndpointKey, Report]],
) -> CatalogEntry | None:
    """The merged entry for ``key`` from the views of ``ordered_sources`` (highest first)."""
    winner: Report | None = None
    names: list[str] = []
    for name in ordered_sources:
        view = views.get(name)
        report = None if view is None else view.get(key)
        if report is not None:
            if winner is None:
                winner = report
            names.append(name)
    if winner is None:
        return None
    return CatalogEntry(winner.endpoint, tuple(names))


def visible_sources(
    policy: Policy, sources: Mapping[str, SourceState], views: Iterable[str]
) -> list[str]:
    """Sources whose views count in the merged view (not expired), highest precedence first."""
    return policy.ordered(
        name for name in views if not (sources.get(name) or SourceState(name)).expired
    )


def recompute(
    policy: Policy,
    sources: Mapping[str, SourceState],
    views: Mapping[str, Mapping[EndpointKey, Report]],
) -> immutables.Map[ServiceName, immutables.Map[EndpointKey, CatalogEntry]]:
    """The merged view from scratch: the reference the incremental core must always equal."""
    ordered = visible_sources(policy, sources, views.keys())
    keys: set[EndpointKey] = set()
    for name in ordered:
        keys.update(views[name].keys())
    by_service: dict[ServiceName, dict[EndpointKey, CatalogEntry]] = {}
    for key in keys:
        entry = merge_entry(key, ordered, views)
        assert entry is not None
        by_service.setdefault(key.service, {})[key] = entry
    return immutables.Map({s: immutables.Map(m) for s, m in by_service.items()})
