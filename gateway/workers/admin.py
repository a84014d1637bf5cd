"""The supervisor's admin API in worker mode: its own views, plus the workers' figures.

Why queries: ``/metrics``, ``/links`` and ``/routes`` need a round trip to every worker (each
counts its own requests, keeps its own links and routes with its own copy of the imports), so
they are answered as the admin server's *queries* (which may wait, bounded) instead of
synchronous views.  A worker that does not answer in time is left out of that answer, and
``/workers`` says which ones serve.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from discovery.steps import Steps
from gateway.admin.overlay_view import overlay_view
from gateway.admin.server import Reply
from gateway.admin.sliced import Sliced
from gateway.admin.views import routes_json_steps
from gateway.observe.merge import links_with_workers, merged_metrics_steps
from gateway.workers.overlay_traffic import WorkerTraffic
from gateway.workers.routes_agreed import WorkerRoutes, routes_in_every_worker_steps

if TYPE_CHECKING:
    from gateway.workers.supervise import Supervisor
    from overlay.peering.route_table import RouteView


def healthz_with_workers(
    own: Callable[[], Any], serving: Callable[[], int], count: int
) -> Callable[[], Any]:
    """``/healthz`` of a supervisor: its own health (its identity), and how many workers
    serve; with none serving the site takes no traffic here, so it answers 503 like an
    expired identity (a load balancer or orchestrator then takes it out)."""

    def healthz() -> Any:
        answer = own()
        up = serving()
        if isinstance(answer, Reply):
            answer.body["workers"] = {"serving": up, "count": count}
            return answer
        body = {**answer, "workers": {"serving": up, "count": count}}
        if up > 0:
            return body
        body.update(status="not ok", reason=f"no worker serves (0 of {count})")
        return Reply(503, body)

    return healthz


def worker_admin(sup: Supervisor, views: dict[str, Any], queries: dict[str, Any]) -> None:
    """Register ``/workers``, and answer ``/metrics``, ``/links`` and ``/routes`` with the
    workers'."""
    gw = sup.gw

    async def workers(_query: Mapping[str, list[str]]) -> Any:
        return sup.workers_view(await sup.stats())

    queries["/workers"] = workers
    views["/healthz"] = healthz_with_workers(views["/healthz"], sup.serving, sup.count)
    if "/metrics" in views and gw.observer is not None:
        registry = gw.observer.registry
        del views["/metrics"]

        async def metrics(_query: Mapping[str, list[str]]) -> Any:
            got = await sup.stats()
            return Sliced(merged_metrics_steps(registry, got, retired=sup.poll.book.retired))

        queries["/metrics"] = metrics
    del views["/links"]

    async def links(_query: Mapping[str, list[str]]) -> Any:
        return links_with_workers(gw.peering.status(), await sup.stats())

    queries["/links"] = links
    del views["/routes"]

    async def routes(_query: Mapping[str, list[str]]) -> Any:
        # The supervisor's view as the request came, then the workers' (a moment later): a
        # site is listed when the supervisor routes there and every serving worker does too.
        view = gw.peering.routes.latest
        serving = sup.serving_indexes()
        answered = {
            st.index: st.routes
            for st in await sup.stats(routes=True)
            if st.routes is not None and st.index in serving
        }
        sources = {} if gw.route_sources is None else gw.route_sources.status()
        return Sliced(_routes_steps(view, answered, gw.config.site.mesh_domain, sources))

    queries["/routes"] = routes
    if "/overlay" in views and gw.observer is not None and gw.config.metrics.enabled:
        # The map's traffic rates: the workers' counters (synchronous, from their last
        # reports; a stale book is refreshed in the background, in the supervisor's nursery).
        traffic = WorkerTraffic(gw.observer, sup.poll.book, sup.stats, sup._nursery)
        views["/overlay"] = overlay_view(
            gw.config.site.name, gw.peering, gw.effective_catalog, gw.observer, totals=traffic
        )


def _routes_steps(
    view: RouteView, workers: Mapping[int, WorkerRoutes], mesh: str, sources: Mapping[str, Any]
) -> Steps[dict[str, Any]]:
    """``/routes`` of a supervisor: what every worker routes (:mod:`~gateway.workers.
    routes_agreed`), rendered like a single gateway's, plus which workers were compared and
    what some of them lack."""
    agreed, lacking = yield from routes_in_every_worker_steps(view, workers, mesh)
    extra = {**sources, "workers_routing": sorted(workers), "workers_lacking": lacking}
    body: dict[str, Any] = yield from routes_json_steps(agreed, mesh, extra=extra)
    return body
