"""``/routes`` in worker mode: the routes every serving worker routes with (pure, no trio).

Why: with ``[site] workers = N`` the supervisor keeps the federation and its own route view,
but every request is routed by a worker, with the import table and catalog the supervisor
sent it (a moment later: a snapshot step) and over its own links to each peer.  A peer that
comes back is in the supervisor's view first; a worker that has not applied the fresh import
yet, or whose own link is not up yet, still answers 503 ("no healthy endpoint") for it.  A
``/routes`` that showed the supervisor's view would tell an operator -- and the demo, which
waits on ``/routes`` before it says the overlay is up -- that the site serves while a request
that lands on that worker is refused.

So the supervisor asks every worker for its route view (only for ``/routes``) and lists, for
each address, the sites in its own failover order that *every* serving worker that answered
routes it to: whichever worker the kernel gives a caller's connection, a listed site is
tried.  What the supervisor routes but some worker does not (yet) is named in
``workers_lacking`` (address -> site -> the workers without it), so the difference is seen,
not hidden.
"""

from __future__ import annotations

from collections.abc import Mapping

import immutables

from discovery.model import ServiceName
from overlay.peering.route_table import RouteView

#: One worker's route view: service -> sites in failover order.
WorkerRoutes = Mapping[ServiceName, tuple[str, ...]]


def routes_in_every_worker(
    view: RouteView, workers: Mapping[int, WorkerRoutes], mesh_domain: str
) -> tuple[RouteView, dict[str, dict[str, list[int]]]]:
    """The supervisor's ``view`` keeping, per service, only the sites that every worker in
    ``workers`` (index -> its route view) lists for it; and what was left out, as
    ``{address: {site: [worker indexes without it]}}``.

    A service no worker routes anywhere leaves the view.  With no worker in ``workers`` the
    view is returned as it is (the caller says that no worker answered).
    """
    if not workers:
        return view, {}
    kept: dict[ServiceName, tuple[str, ...]] = {}
    lacking: dict[str, dict[str, list[int]]] = {}
    for name, sites in view.routes.items():
        ok: list[str] = []
        for site in sites:
            without = sorted(i for i, routes in workers.items() if site not in routes.get(name, ()))
            if without:
                address = f"{name.name}.{name.namespace}.{mesh_domain}"
                lacking.setdefault(address, {})[site] = without
            else:
                ok.append(site)
        if ok:
            kept[name] = tuple(ok)
    if not lacking:
        return view, {}
    return RouteView(view.local_site, immutables.Map(kept)), lacking
