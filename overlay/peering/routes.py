"""Route-view publishing: rebuild the routing view when its inputs change, and publish it.

The view itself is the pure :func:`~overlay.peering.route_table.build_route_view`; this module
is its thin Trio adapter.  It rebuilds on a *kick* (a link went up or down, an import changed,
the local catalog moved) and at the next import expiry: stale imports are withdrawn on a timer
owned here, so a peer whose link is gone leaves the import table ``import_grace`` seconds
later even when nothing else happens.  Kicks coalesce (a channel of one): a burst of changes
costs one rebuild, and the rebuild always reads the latest inputs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping

import immutables
import trio

from discovery.catalog import serving_endpoints
from discovery.snapshot import Catalog
from discovery.watch import Watch
from overlay.federation.import_ import ImportTable
from overlay.peering.links import PeerLinks
from overlay.peering.route_table import RouteView, build_route_view


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
    ) -> None:
        self.local_site = local_site
        self.catalog = catalog
        self.imports = imports
        self._peers = peers
        self._clock = clock
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
            while True:
                now = self._clock()
                table = self.imports.latest
                expired = table.expire(now)
                if expired is not table:
                    self.imports.publish(expired)
                    table = expired
                down = {name for name, st in self._peers.items() if st.outbound() is None}
                priorities = {name: st.spec.priority for name, st in self._peers.items()}
                view = build_route_view(
                    self.local_site,
                    serving_endpoints(self.catalog.latest, now),
                    table,
                    priorities,
                    now,
                    down_peers=down,
                )
                if view != self.routes.latest:
                    self.routes.publish(view)
                deadline = table.next_expiry()
                with trio.move_on_at(float("inf") if deadline is None else deadline):
                    await self._kick_receive.receive()

    async def _kick_on_catalog(self) -> None:
        seen = -1
        while True:
            seen, _ = await self.catalog.wait_newer(seen)
            self.kick()
