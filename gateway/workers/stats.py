"""A worker's counters for its supervisor, and the supervisor's book of them.

Why: with ``[site] workers = N`` every request is served, and counted, by one worker process,
while ``/metrics``, ``/links`` and ``isthmus status`` are answered by the supervisor (the one
admin API of the site).  On a ``StatsRequest`` a worker answers with :func:`worker_stats`: a
frozen, picklable :class:`WorkerStats` of plain values -- its registry's counters and
histograms, the gauges of its own per-process state (its links, buffer budget, outlier
ejections, mirrors, access log), its ``Peering.status()``, what it has in flight and the
snapshot version it runs.  It runs none of the catalog, import or identity collectors: those
are the supervisor's state (the worker holds copies), and a 100k-endpoint catalog tally per
worker per scrape would be wasted CPU.  :mod:`gateway.observe.merge` turns the reports into
the site's view.

:class:`StatsBook` is the supervisor's memory of the reports, pure: the last report of each
worker (a worker that does not answer one scrape keeps its last counts in the sum, so the sum
never dips, but not its gauges and links: :meth:`StatsBook.silent`), and the counts of
workers that were replaced (a new pid at the same index): they are added to ``retired`` so
the site's counters stay monotonic across a worker's crash.  What a worker counted after its
last report and before it died is lost; scrapes bound that window.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from gateway.cluster.outlier_metrics import outlier_gauges
from gateway.observe.merge import merge_families
from gateway.observe.metrics import DEFAULT_MAX_SERIES, FamilySamples, GaugeFamily
from gateway.observe.observer import access_log_gauges
from gateway.observe.state_gauges import buffer_budget_gauges, link_gauges
from gateway.routes.mirrors import mirror_gauges
from gateway.workers.routes_agreed import WorkerRoutes, worker_routes

if TYPE_CHECKING:
    from gateway.app import Gateway

__all__ = ["StatsBook", "WorkerStats", "worker_stats", "workers_json"]


@dataclass(frozen=True, slots=True)
class WorkerStats:
    """One worker's report: plain values only (it crosses a process boundary pickled)."""

    index: int
    pid: int
    #: Its registry's counters and histograms, then its per-process gauges.
    families: tuple[FamilySamples, ...]
    #: Its ``Peering.status()``: per peer site, its worker links.
    links: Mapping[str, Any] = field(default_factory=dict)
    #: What it has in flight now, by kind (``link_streams``, ``mirrors``, ``upstream_h2``,
    #: ``upstream_idle_h1``, and what the caller adds).
    in_flight: Mapping[str, int] = field(default_factory=dict)
    #: The catalog/imports snapshot version it runs (the channel's versions; opaque here).
    snapshot_version: object = None
    #: Unix time the report was taken (for ``/workers``: how old the figures are).
    taken_at: float = 0.0
    #: Its route view (:data:`~gateway.workers.routes_agreed.WorkerRoutes`), when the request
    #: asked for it (``/routes``); None otherwise, and once the report is no longer this round's.
    routes: WorkerRoutes | None = None


def worker_stats(
    gw: Gateway,
    *,
    index: int = 0,
    snapshot_version: object = None,
    in_flight: Mapping[str, int] | None = None,
    routes: bool = False,
) -> WorkerStats:
    """The report of the worker whose parts are ``gw`` (its ``index`` among the workers;
    ``in_flight`` adds counts the caller keeps, e.g. open caller connections; ``routes``: add
    the route view the worker routes with now)."""
    links = gw.peering.status()
    gauges: list[GaugeFamily] = [*link_gauges(links)]
    settings = gw.peering.settings
    gauges += buffer_budget_gauges(settings.h2_limits.window_budget if settings.h2_limits else None)
    gauges += outlier_gauges(gw.outlier)
    gauges += mirror_gauges(gw.router.mirrors)
    families: list[FamilySamples] = []
    if gw.observer is not None:
        families += gw.observer.registry.export_families()
        if gw.observer.access_log is not None:
            gauges += access_log_gauges(gw.observer.access_log)
    families += (g.export() for g in gauges)
    pool = gw.pool.statistics()
    counts = {
        "link_streams": sum(int(site.get("open_streams", 0)) for site in links.values()),
        "mirrors": gw.router.mirrors.in_flight,
        "upstream_h2": pool.h2_connections,
        "upstream_idle_h1": pool.idle_h1,
        **(in_flight or {}),
    }
    return WorkerStats(
        index=index,
        pid=os.getpid(),
        families=tuple(families),
        links=links,
        in_flight=counts,
        snapshot_version=snapshot_version,
        taken_at=time.time(),
        routes=worker_routes(gw.peering.routes.latest) if routes else None,
    )


def _counts(families: Iterable[FamilySamples]) -> list[FamilySamples]:
    """The families that count since the process started (a dead process holds no gauges)."""
    return [f for f in families if f.kind in ("counter", "histogram")]


class StatsBook:
    """The supervisor's last report of each worker and the counts of replaced ones."""

    def __init__(self, *, max_series: int = DEFAULT_MAX_SERIES) -> None:
        self.max_series = max_series
        self._last: dict[int, WorkerStats] = {}
        self._retired: list[FamilySamples] = []

    def record(self, stats: WorkerStats) -> None:
        """Keep ``stats`` as its worker's last report; a report from a new process at the same
        index retires the old process's counts first."""
        old = self._last.get(stats.index)
        if old is not None and old.pid != stats.pid:
            self._retire(old)
        self._last[stats.index] = stats

    def silent(self, indexes: Iterable[int]) -> None:
        """Workers ``indexes`` did not answer a round: keep their counts (the site's sums must
        not dip) but not their gauges, links, in-flight figures or routes, which may be long
        gone (a dead worker holds no link)."""
        for index in indexes:
            old = self._last.get(index)
            if old is not None:
                self._last[index] = replace(
                    old,
                    families=tuple(_counts(old.families)),
                    links={},
                    in_flight={},
                    routes=None,
                )

    def forget(self, index: int) -> None:
        """Worker ``index`` is gone for good (the pool shrank): its counts are retired."""
        old = self._last.pop(index, None)
        if old is not None:
            self._retire(old)

    def _retire(self, old: WorkerStats) -> None:
        self._retired = merge_families(
            _counts(self._retired),
            [("retired", _counts(old.families))],
            max_series=self.max_series,
        )

    def current(self) -> list[WorkerStats]:
        """The last report of every worker, by index."""
        return [self._last[i] for i in sorted(self._last)]

    @property
    def retired(self) -> Sequence[FamilySamples]:
        """The summed counts of every worker process that was replaced."""
        return tuple(self._retired)


def workers_json(stats: Iterable[WorkerStats]) -> dict[str, dict[str, Any]]:
    """Per worker index (for ``/workers``): its pid, what it has in flight, how many requests
    it served, the snapshot version it runs and when the figures were taken."""
    out: dict[str, dict[str, Any]] = {}
    for st in sorted(stats, key=lambda s: s.index):
        version = st.snapshot_version
        out[str(st.index)] = {
            "pid": st.pid,
            "requests": sum(
                values[0]
                for fam in st.families
                if fam.name == "isthmus_requests_total"
                for _labels, values in fam.samples
            ),
            "in_flight": dict(st.in_flight),
            "snapshot_version": version
            if version is None or isinstance(version, int | str)
            else repr(version),
            "taken_at": st.taken_at,
        }
    return out
