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

from collections.abc import Mapping, Sequence

import immutables

from discovery.model import ServiceName
from discovery.steps import UNSLICED, Steps, check_slice, complete
from gateway.admin.sliced import ROWS_SLICE
from overlay.peering.route_table import RouteView

#: One worker's route view as it crosses the control channel: sites in failover order ->
#: the (service, namespace) pairs routed there.  Why not the view itself: pickling 10k
#: ``ServiceName`` keys took 20-40 ms of the worker's loop; grouped plain strings, 3-10 ms.
WorkerRoutes = Mapping[tuple[str, ...], Sequence[tuple[str, str]]]


def worker_routes(view: RouteView) -> dict[tuple[str, ...], list[tuple[str, str]]]:
    """``view`` as a worker sends it for ``/routes`` (see :data:`WorkerRoutes`)."""
    out: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for name, sites in view.routes.items():
        out.setdefault(sites, []).append((name.name, name.namespace))
    return out


def routes_in_every_worker(
    view: RouteView, workers: Mapping[int, WorkerRoutes], mesh_domain: str
) -> tuple[RouteView, dict[str, dict[str, list[int]]]]:
    """The supervisor's ``view`` keeping, per service, only the sites that every worker in
    ``workers`` (index -> its routes) lists for it; and what was left out, as
    ``{address: {site: [worker indexes without it]}}``.

    A service no worker routes anywhere leaves the view.  With no worker in ``workers`` the
    view is returned as it is (the caller says that no worker answered).
    """
    return complete(routes_in_every_worker_steps(view, workers, mesh_domain, slice_rows=UNSLICED))


def routes_in_every_worker_steps(
    view: RouteView,
    workers: Mapping[int, WorkerRoutes],
    mesh_domain: str,
    *,
    slice_rows: int = ROWS_SLICE,
) -> Steps[tuple[RouteView, dict[str, dict[str, list[int]]]]]:
    """:func:`routes_in_every_worker`, yielding after every ``slice_rows`` services (a large
    peer's 10k services and two workers' views: 10-35 ms in one go on the 2-core machine)."""
    check_slice(slice_rows)
    if not workers:
        return view, {}
    theirs: list[tuple[int, dict[tuple[str, str], tuple[str, ...]]]] = []
    pending = 0
    for index in sorted(workers):
        sites_of: dict[tuple[str, str], tuple[str, ...]] = {}
        for sites, services in workers[index].items():
            for service in services:
                sites_of[service] = sites
            pending += len(services)
            if pending >= slice_rows:
                yield pending
                pending = 0
        theirs.append((index, sites_of))
    kept: dict[ServiceName, tuple[str, ...]] = {}
    lacking: dict[str, dict[str, list[int]]] = {}
    for name, sites in view.routes.items():
        if pending >= slice_rows:
            yield pending
            pending = 0
        pending += 1
        key = (name.name, name.namespace)
        differ = [(i, mine.get(key, ())) for i, mine in theirs if mine.get(key) != sites]
        if not differ:  # the common case: every worker routes it as the supervisor does
            kept[name] = sites
            continue
        ok: list[str] = []
        for site in sites:
            without = [i for i, routed in differ if site not in routed]
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
