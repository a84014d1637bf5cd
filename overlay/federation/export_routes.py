"""Attach the owner's routes to a peer's export view (pure; protocol version 2).

Why here and not in the tallies: routes come from the config, endpoints from the catalog, and
they change at different times (a reload versus a health check).  The export view of a peer
(:class:`~overlay.federation.export_feed.PeerExport`) stays what it was; this fold puts each
exported service's route texts on its aggregate, so a service the peer may not see carries no
route to it either (``[[exports]]`` per peer decides both), and a route change becomes an
ordinary upsert of the service in the next delta.

Cost: nothing when the site has no routes to export (the view is passed through as is); a
catalog change re-attaches only the services it changed; a route change (a reload) walks the
exported services once.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from discovery.model import ServiceName
from overlay.federation.export import EMPTY_VIEW, ExportView
from overlay.federation.protocol import ExportedService

#: Service -> the canonical JSON texts of the owner's routes for its addresses, config order.
RouteTexts = Mapping[ServiceName, tuple[str, ...]]


def with_routes(svc: ExportedService, routes: RouteTexts) -> ExportedService:
    texts = routes.get(svc.service, ())
    return svc if texts == svc.routes else replace(svc, routes=texts)


class RoutedView:
    """The peer's export view with routes attached; :meth:`update` after every change."""

    def __init__(self) -> None:
        self.view: ExportView = EMPTY_VIEW
        self._routes: RouteTexts = {}

    def update(
        self,
        view: ExportView,
        changed: frozenset[ServiceName] | None,
        routes: RouteTexts,
    ) -> frozenset[ServiceName] | None:
        """Fold a new export view (``changed``: the services that differ, None: any) and the
        current ``routes`` in; returns the services whose attached entry may differ (None:
        compare everything)."""
        if not routes and not self._routes:
            self.view = view  # nothing to attach: the view as it is
            return changed
        if routes is not self._routes or changed is None:
            self._routes = routes
            mutation = EMPTY_VIEW.mutate()
            for name, svc in view.items():
                mutation[name] = with_routes(svc, routes)
            self.view = mutation.finish()
            return None
        with self.view.mutate() as mutation:
            for name in changed:
                entry = view.get(name)
                if entry is None:
                    mutation.pop(name, None)
                else:
                    mutation[name] = with_routes(entry, routes)
            self.view = mutation.finish()
        return changed
