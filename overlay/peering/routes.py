"""Route-view publishing: rebuild the routing view when its inputs change, and publish it.

The view itself is the pure :func:`~overlay.peering.route_table.build_route_view`, kept current
by :class:`~overlay.peering.route_fold.RouteFold` (only the changed local services when only
the local catalog moved; a sliced full rebuild otherwise); this module is its thin Trio
adapter, running the fold with :func:`~discovery.pacing.paced` so requests run between slices.
It rebuilds on a *kick* (a link went up or down, an import changed, the local catalog moved)
and at the next import expiry: stale imports are withdrawn on a timer owned here, so a peer
whose link is gone leaves the import table ``import_grace`` seconds later even when nothing
else happens. Kicks coalesce (a channel of one): a burst of changes costs one rebuild, and the
rebuild always reads the latest inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import immutables
import trio

from discovery.pacing import paced
from discovery.snapshot import Catalog
from discovery.steps import SLICE_ITEMS
from discovery.watch import Watch
from overlay.federation.import_ import ImportTable
from overlay.peering.links import PeerLinks
from overlay.peering.replicas import down_sites
from overlay.peering.route_fold import RouteFold
from overlay.peering.route_table import RouteView


class RoutePublisher:
    """Keeps ``routes`` (a :class:`~discovery.watch.Watch` of the view) current; see above."""

    def __init__(
        self,
        *,
        local_site: str,
        catalog: Watch[Catalog],
        imports: Watch[ImportTable],
        peers: Mapping[str, PeerLinks],
        clock: Callable[[], float] = trio.current_time,
        slice_items: int = SLICE_ITEMS,
        watch_imports: bool = False,
    ) -> None:
        self.local_site = local_site
        #: Rebuild on every import-table publish too: a worker's table is published from
        #: outside (the supervisor's), with no federation stream here to kick.
        self._watch_imports = watch_imports
        self.catalog = catalog
        self.imports = imports
        self._peers = peers
        self._clock = clock
        self._fold = RouteFold(local_site)
        self._slice_items = slice_items
        self.routes: Watch[RouteView] = Watch(RouteView(local_site, immutables.Map()))
        self._kick_send, self._kick_receive = trio.open_memory_channel[None](1)

    def kick(self) -> None:
        """Ask for a rebuild (sync, never blocks; kicks coalesce)."""
        with contextlib.suppress(trio.WouldBlock):
            self._kick_send.send_nowait(None)

    async def run(self) -> None:
        """Rebuild and publish on every kick and import expiry; until cancelled."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._kick_on_catalog)
            if self._watch_imports:
                nursery.start_soon(self._kick_on_imports)
            while True:
                now = self._clock()
                table = self.imports.latest
                expired = table.expire(now)
                if expired is not table:
                    self.imports.publish(expired)
                    table = expired
                # A site is down only when every replica is (docs/replicas.md).
                states = self._peers.values()
                down = down_sites((st.spec.name, st.outbound() is not None) for st in states)
                priorities = {st.spec.name: st.spec.priority for st in states}
                view = await paced(
                    self._fold.fold_steps(
                        self.catalog.latest,
                        table,
                        priorities,
                        now,
                        down_peers=down,
                        slice_items=self._slice_items,
                    )
                )
                # Identity first: a fold that moved nothing returns its previous view, which is
                # kept the published object, so no two equal views of every route are compared.
                if view is not self.routes.latest:
                    if view != self.routes.latest:
                        self.routes.publish(view)
                    else:
                        self._fold.view = self.routes.latest
                deadline = table.next_expiry()
                with trio.move_on_at(float("inf") if deadline is None else deadline):
                    await self._kick_receive.receive()

    async def _kick_on_catalog(self) -> None:
        seen = -1
        while True:
            seen, _ = await self.catalog.wait_newer(seen)
            self.kick()

    async def _kick_on_imports(self) -> None:
        seen = -1
        while True:
            seen, _ = await self.imports.wait_newer(seen)
            self.kick()
