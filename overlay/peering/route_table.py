"""The merged routing view: for each service, the sites able to serve it, in failover order.

This is what the data path routes on.  It is rebuilt (pure, from scratch) whenever the local
catalog, the import table or the set of live links changes, and swapped in whole by
:mod:`overlay.peering.routes`, which publishes it; the gateway router reads only the frozen
:class:`RouteView`.

Why it lives in ``peering`` and not ``federation``: the table merges three inputs, and only
peering holds all of them -- the local catalog, the federation imports (:mod:`overlay.federation`
knows nothing of links), and which peers have a live link.  It is kept apart from the publisher
as a pure module (no Trio) so the router and its tests can build and read views directly.

Rules, and why:

* **Local first.**  The local site is listed first when it has at least one healthy local
  endpoint of the service: the cheapest path, and the only one that survives a partition.
  Every local service counts, exported or not -- export consent is about what *peers* see.
* **Then peers by priority** (``peer_priorities``, lower first; ``default_priority`` for a
  peer missing from it, as :class:`~gateway.config.model.PeerConfig` defaults to 100), ties
  broken by site name so that every gateway computes the same order.
* **Only sites that can serve.**  A peer is skipped for a service it exports with zero healthy
  endpoints, and skipped altogether when its link is down: named in ``down_peers``, marked
  stale in the import table, or (if ``max_silence`` is given) not confirmed for that long at
  ``now``.  Stale entries stay in the import table for visibility and quick return, but no
  traffic is sent down a link known to be dead.
* **Pinned addresses** (``api.default.aws-east.isthmus``) resolve to exactly that site, or to
  nothing when it cannot serve: the caller asked for that site, so failing over elsewhere
  would be wrong; the router answers 503.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass

import immutables

from discovery.model import Endpoint, ServiceName
from discovery.steps import UNSLICED, Steps, complete
from overlay.address import L7Address
from overlay.federation.import_ import ImportTable, PeerImports

DEFAULT_PEER_PRIORITY = 100


@dataclass(frozen=True, slots=True)
class RouteView:
    """Service -> sites in failover order.  Frozen; rebuild and swap to change."""

    local_site: str
    routes: immutables.Map[ServiceName, tuple[str, ...]]

    def sites_for(self, address: L7Address) -> tuple[str, ...]:
        """The sites to try for ``address``, best first; empty if none can serve it."""
        sites = self.routes.get(address.service_name, ())
        if address.site is None:
            return sites
        return (address.site,) if address.site in sites else ()

    def services(self) -> Iterable[ServiceName]:
        """Every service some site can serve right now."""
        return self.routes.keys()


def _usable(
    peer: PeerImports,
    down_peers: Collection[str],
    now: float,
    max_silence: float | None,
) -> bool:
    if peer.stale or peer.site in down_peers:
        return False
    return max_silence is None or now - peer.confirmed_at <= max_silence


def ordered_peers(
    local_site: str,
    imports: ImportTable | Iterable[PeerImports],
    peer_priorities: Mapping[str, int],
    now: float,
    down_peers: Collection[str],
    max_silence: float | None,
    default_priority: int,
) -> list[PeerImports]:
    """The peers that can serve, in failover order (priority, then name)."""
    peers = imports.peers.values() if isinstance(imports, ImportTable) else imports
    return sorted(
        (p for p in peers if p.site != local_site and _usable(p, down_peers, now, max_silence)),
        key=lambda p: (peer_priorities.get(p.site, default_priority), p.site),
    )


def build_route_view(
    local_site: str,
    local_endpoints: Iterable[Endpoint],
    imports: ImportTable | Iterable[PeerImports],
    peer_priorities: Mapping[str, int],
    now: float,
    *,
    down_peers: Collection[str] = frozenset(),
    max_silence: float | None = None,
    default_priority: int = DEFAULT_PEER_PRIORITY,
) -> RouteView:
    """Merge the local catalog and the imports into a :class:`RouteView` (see module doc)."""
    steps = build_route_view_steps(
        local_site,
        local_endpoints,
        imports,
        peer_priorities,
        now,
        down_peers=down_peers,
        max_silence=max_silence,
        default_priority=default_priority,
        slice_items=UNSLICED,
    )
    return complete(steps)


def build_route_view_steps(
    local_site: str,
    local_endpoints: Iterable[Endpoint],
    imports: ImportTable | Iterable[PeerImports],
    peer_priorities: Mapping[str, int],
    now: float,
    *,
    down_peers: Collection[str] = frozenset(),
    max_silence: float | None = None,
    default_priority: int = DEFAULT_PEER_PRIORITY,
    slice_items: int,
) -> Steps[RouteView]:
    """:func:`build_route_view`, pausing every ``slice_items`` endpoints or imported services
    (a peer exporting 10k services is 10k entries to merge)."""
    routes: dict[ServiceName, list[str]] = {}
    work = 0
    for ep in local_endpoints:
        work += 1
        if work >= slice_items:
            yield work
            work = 0
        if ep.healthy and ep.service not in routes:
            routes[ep.service] = [local_site]
    ordered = ordered_peers(
        local_site, imports, peer_priorities, now, down_peers, max_silence, default_priority
    )
    for peer in ordered:
        for name, entry in peer.services.items():
            work += 1
            if work >= slice_items:
                yield work
                work = 0
            if entry.service.healthy_count > 0:
                routes.setdefault(name, []).append(peer.site)
    mutation = immutables.Map[ServiceName, tuple[str, ...]]().mutate()
    for key, sites in routes.items():
        work += 1
        if work >= slice_items:
            yield work
            work = 0
        mutation[key] = tuple(sites)
    return RouteView(local_site, mutation.finish())
