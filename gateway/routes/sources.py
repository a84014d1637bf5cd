"""Where the router's routes come from: this site's ``[[routes]]`` and its peers' (Trio adapter).

Theory of operation
-------------------
One :class:`RouteSources` per gateway keeps ``router.rules`` equal to the local routes plus
the routes imported from the sites that own their addresses (:mod:`gateway.routes.imported`),
and keeps the routes this site owns on its exports (:mod:`gateway.routes.owned`):

* :meth:`set_config` (at start and on every reload): new local routes are compiled, the
  owned ones handed to peering (every live export stream re-exports the services whose routes
  changed), and the rules rebuilt;
* :meth:`run` watches the import table: when the routes some peer sends differ from before
  (a health change alone does not count), the new texts are decoded in slices (a checkpoint
  every :data:`SLICE` routes, so a peer sending a thousand routes does not hold the event
  loop), and the rules rebuilt.

A rebuild merges compiled routes into one :class:`~gateway.routes.table.RouteTable`, so a
request matched by an imported route takes exactly the path of one matched by a local route.
Routes compiled before are reused (with their rate-limit buckets), so an import change does
not reset the local routes' buckets.  Newly rejected routes and new conflicts are logged once,
when they appear -- never per request.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import trio

from discovery.watch import Watch
from gateway.config.model import GatewayConfig
from gateway.config.routes import RouteConfig
from gateway.routes.forward import Mirrors, RouteRules
from gateway.routes.imported import (
    NO_IMPORTED_ROUTES,
    ImportedRoutes,
    PeerRoutes,
    Rejected,
    RouteDecoder,
    choose_routes,
)
from gateway.routes.owned import owned_route_texts
from gateway.routes.table import (
    INDEX_MIN_ROUTES,
    AddressKey,
    CompiledRoute,
    PathIndex,
    RouteTable,
    compile_route,
    compile_routes,
)
from overlay.federation.import_ import ImportTable
from overlay.peering.peers import Peering

log = logging.getLogger("isthmus.routes")

#: Routes decoded between two checkpoints.
SLICE = 64


class RulesHolder(Protocol):
    """What the routes are for: the router (its rules swapped whole, its mirrors' nursery)."""

    rules: RouteRules | None
    mirrors: Mirrors


def address_text(key: AddressKey) -> str:
    service, namespace, site = key
    return f"{service}.{namespace}" + (f".{site}" if site else "")


class RouteSources:
    """Keeps ``router.rules`` and the exported routes current; see the module docstring."""

    def __init__(self, router: RulesHolder, peering: Peering, config: GatewayConfig) -> None:
        self.router = router
        self.peering = peering
        self.imports: Watch[ImportTable] = peering.imports
        self.imported: ImportedRoutes = NO_IMPORTED_ROUTES
        self._config: GatewayConfig | None = None
        self._local = RouteTable({})
        self._priorities: dict[str, int] = {}
        self._decoder = RouteDecoder(config.site.name, ())
        self._peer_routes: dict[str, PeerRoutes] = {}
        self._compiled: dict[int, tuple[RouteConfig, CompiledRoute]] = {}
        self._logged_rejects: set[Rejected] = set()
        self._logged_conflicts: dict[AddressKey, tuple[str, ...]] = {}
        self.set_config(config)

    # -- inputs ----------------------------------------------------------------------------

    def set_config(self, config: GatewayConfig) -> None:
        """Take a (new) config: local routes, peers and mesh domain; cheap when none changed."""
        old = self._config
        self._config = config
        site = config.site
        peers = {p.name: p.priority for p in config.peers}
        if old is None or old.routes != config.routes or old.site.mesh_domain != site.mesh_domain:
            self._local = compile_routes(config.routes, site.mesh_domain)
            self._compiled.clear()
            owned, dropped = owned_route_texts(config.routes, site.name)
            for line in dropped:
                log.warning("routes not exported to peers: %s", line)
            self.peering.set_export_routes(owned)
        if old is None or peers != self._priorities or old.site.name != site.name:
            self._priorities = peers
            self._decoder.reset(site.name, peers)
        self._choose()
        self._rebuild()

    def _scan(self, table: ImportTable) -> bool:
        """Refresh the peers' route texts from ``table``; True when they changed.

        O(peers): each peer's route map is the same object while its routes are unchanged
        (:attr:`~overlay.federation.import_.PeerImports.routes`), so a health delta costs an
        identity check, not a walk of the peer's services."""
        fresh: dict[str, PeerRoutes] = {
            site: peer.routes for site, peer in table.peers.items() if peer.routes
        }
        old = self._peer_routes
        if fresh.keys() == old.keys() and all(fresh[s] is old[s] for s in fresh):
            return False
        self._peer_routes = fresh
        return True

    async def _prepare(self) -> None:
        """Decode the texts not seen yet, a slice at a time (the choice then hits the cache)."""
        done = 0
        for site, services in list(self._peer_routes.items()):
            for service, texts in services.items():
                for text in texts:
                    self._decoder.decode(site, service, text)
                    done += 1
                    if done % SLICE == 0:
                        await trio.lowlevel.checkpoint()

    # -- the rules -------------------------------------------------------------------------

    def _choose(self) -> None:
        local = frozenset(self._local.by_address)
        imported = choose_routes(self._peer_routes, local, self._priorities, self._decoder)
        for rejected in imported.rejected:
            if rejected not in self._logged_rejects:
                log.warning(
                    "route %d of %s from %s rejected: %s",
                    rejected.position,
                    rejected.service,
                    rejected.site,
                    rejected.reason,
                )
        self._logged_rejects = set(imported.rejected)
        for key, others in imported.conflicts.items():
            if self._logged_conflicts.get(key) != others:
                log.warning(
                    "sites %s send other routes for %s than %s: following %s",
                    ", ".join(others),
                    address_text(key),
                    imported.origin[key],
                    imported.origin[key],
                )
        self._logged_conflicts = dict(imported.conflicts)
        self.imported = imported

    def _compile(self, route: RouteConfig, index: int, mesh_domain: str) -> CompiledRoute:
        hit = self._compiled.get(id(route))
        if hit is not None and hit[0] is route:
            return hit[1]
        compiled = compile_route(index, route, mesh_domain)
        self._compiled[id(route)] = (route, compiled)
        return compiled

    def _rebuild(self) -> None:
        assert self._config is not None
        mesh = self._config.site.mesh_domain
        by_address = dict(self._local.by_address)
        indexes = dict(self._local.indexes)
        kept: set[int] = set()
        for key, routes in self.imported.routes.items():
            compiled = tuple(self._compile(r, i, mesh) for i, r in enumerate(routes))
            kept.update(id(r) for r in routes)
            by_address[key] = compiled
            if len(compiled) > INDEX_MIN_ROUTES:
                indexes[key] = PathIndex(compiled)
        self._compiled = {k: v for k, v in self._compiled.items() if k in kept}
        if not by_address:
            self.router.rules = None
            return
        self.router.rules = RouteRules(
            RouteTable(by_address, indexes),
            mesh_domain=mesh,
            mirrors=self.router.mirrors,
            previous=self.router.rules,
        )

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the import table until cancelled."""
        task_status.started()
        seen = -1
        while True:
            seen, table = await self.imports.wait_newer(seen)
            if not self._scan(table):
                continue
            try:
                await self._prepare()
                self._choose()
                self._rebuild()
            except Exception:  # a bug must cost the peers' routes, never the gateway
                log.exception("following the peers' routes failed; keeping the last rules")

    # -- reporting -------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """The imported routes for ``/routes`` (and ``isthmus status``)."""
        imported = self.imported
        return {
            "imported_routes": {
                address_text(key): {
                    "site": imported.origin[key],
                    "routes": [r.name for r in routes],
                    "conflict": list(imported.conflicts.get(key, ())),
                }
                for key, routes in sorted(imported.routes.items(), key=lambda kv: str(kv[0]))
            },
            "shadowed_routes": sorted(address_text(k) for k in imported.shadowed),
            "rejected_routes": [
                {
                    "site": r.site,
                    "service": str(r.service),
                    "position": r.position,
                    "reason": r.reason,
                }
                for r in imported.rejected
            ],
        }
