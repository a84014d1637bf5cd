"""Keep the routing view current by folding in only what changed (pure, sliced).

Why: :func:`~overlay.peering.route_table.build_route_view` rebuilds the whole view -- every
local service and every service imported from every peer -- and the publisher used to call it
on every catalog publish.  With a peer exporting 10k services and a Consul churn publishing the
local catalog several times a second, that was a 10k-service rebuild (tens of milliseconds in
one step of the event loop) several times a second, for a change of a few local services.

:class:`RouteFold` remembers the inputs of the last view.  When only the local catalog moved,
it recomputes the routes of the local services whose endpoint maps changed (an identity check
per service on the persistent maps, :func:`~overlay.federation.export_feed.changed_services`),
each against the same import table.  Anything else -- another import table, a link up or down,
other priorities, a source's standing (which may change every endpoint's routability) -- means
a full rebuild, sliced like every large fold (:mod:`discovery.steps`).  Either way the result
equals :func:`build_route_view` of the same inputs (checked by the tests).  When a fold moves no
route (endpoints churn behind unchanged routes), it returns the previous view *object*, so the
publisher need not compare two equal views of every peer's services (that compare was the
largest part of a Consul churn's CPU in the gateway).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import immutables

from discovery.catalog import serving_endpoints
from discovery.model import ServiceName
from discovery.snapshot import Catalog
from discovery.steps import Steps
from overlay.federation.export_feed import changed_services
from overlay.federation.import_ import ImportTable, PeerImports
from overlay.peering.route_table import (
    DEFAULT_PEER_PRIORITY,
    RouteView,
    build_route_view_steps,
    ordered_peers,
)


def _serves_locally(catalog: Catalog, service: ServiceName, now: float) -> bool:
    """Whether the local catalog has a routable (hence healthy) endpoint of ``service``."""
    endpoints = catalog.services.get(service)
    return endpoints is not None and any(
        catalog.is_routable(entry, now) for entry in endpoints.values()
    )


def _sites(
    local_site: str, service: ServiceName, local: bool, peers: Iterable[PeerImports]
) -> tuple[str, ...]:
    sites = [local_site] if local else []
    for peer in peers:
        entry = peer.services.get(service)
        if entry is not None and entry.service.healthy_count > 0:
            sites.append(peer.site)
    return tuple(sites)


class RouteFold:
    """The routing view of one site, updated from its inputs (see module doc).

    ``full_builds`` and ``services_folded`` count the work done (the tests read them).
    """

    def __init__(self, local_site: str, *, default_priority: int = DEFAULT_PEER_PRIORITY) -> None:
        self.local_site = local_site
        self.default_priority = default_priority
        self.view = RouteView(local_site, immutables.Map())
        self.full_builds = 0
        self.services_folded = 0
        self._inputs: tuple[ImportTable, frozenset[str], dict[str, int]] | None = None
        self._catalog: Catalog | None = None

    def fold_steps(
        self,
        catalog: Catalog,
        table: ImportTable,
        priorities: Mapping[str, int],
        now: float,
        *,
        down_peers: frozenset[str],
        slice_items: int,
    ) -> Steps[RouteView]:
        """The view for these inputs, pausing every ``slice_items`` services.

        The fold's state changes only when the computation completes.
        """
        inputs = (table, down_peers, dict(priorities))
        changed = None
        if self._catalog is not None and self._inputs is not None:
            same = self._inputs[0] is table and self._inputs[1:] == inputs[1:]
            changed = changed_services(self._catalog, catalog) if same else None
        if changed is None:
            view = yield from build_route_view_steps(
                self.local_site,
                serving_endpoints(catalog, now),
                table,
                priorities,
                now,
                down_peers=down_peers,
                default_priority=self.default_priority,
                slice_items=slice_items,
            )
            self.full_builds += 1
        else:
            peers = ordered_peers(
                self.local_site, table, priorities, now, down_peers, None, self.default_priority
            )
            work = 0
            moved = False
            with self.view.routes.mutate() as routes:
                for service in changed:
                    work += 1
                    if work >= slice_items:
                        yield work
                        work = 0
                    local = _serves_locally(catalog, service, now)
                    sites = _sites(self.local_site, service, local, peers)
                    if sites:
                        if routes.get(service) != sites:
                            routes[service] = sites
                            moved = True
                    elif service in routes:
                        del routes[service]
                        moved = True
                # Nothing moved (a churn of endpoints behind unchanged routes): the same view
                # object, so the publisher's identity check settles it instead of comparing
                # every route of every peer's services.
                view = RouteView(self.local_site, routes.finish()) if moved else self.view
            self.services_folded += len(changed)
        self.view, self._catalog, self._inputs = view, catalog, inputs
        return view
