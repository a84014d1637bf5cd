"""``/overlay``'s traffic figures in worker mode: the workers' counters, read without waiting.

Why: the overlay map's rates come from the requests counters, and with ``[site] workers = N``
the workers count the requests while the supervisor answers ``/overlay``.  The view must stay
synchronous and cheap (a page left open asks every few seconds), so it never waits for the
workers: it sums what the supervisor already holds -- its own counters (the streams peers
send on its primary links), each worker's last report in the stats book, and the counts of
replaced workers (so a restart never makes the totals dip) -- and, when the last round of
stats requests is older than :data:`REFRESH_S`, starts one in the background for the next
look.  So the figures are at most one page poll old; a scrape of ``/metrics``, ``/links`` or
``/workers`` refreshes them too.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from gateway.admin.traffic import SiteTotals, add_totals, families_site_totals, site_totals
from gateway.observe.observer import Observer
from gateway.workers.stats import StatsBook, WorkerStats

__all__ = ["REFRESH_S", "WorkerTraffic"]

#: A round of stats requests is started by ``/overlay`` at most this often.
REFRESH_S = 1.0


class WorkerTraffic:
    """The site's traffic totals for :func:`gateway.admin.overlay_view.overlay_view`."""

    def __init__(
        self,
        own: Observer,
        book: StatsBook,
        refresh: Callable[[], Awaitable[object]],
        nursery: trio.Nursery | None,
        *,
        every_s: float = REFRESH_S,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.own = own
        self.book = book
        self.refresh = refresh
        self.nursery = nursery
        self.every_s = every_s
        self.clock = clock
        self._started = -float("inf")
        self._running = False
        #: Each report's totals, by the report (a new report is a new object).
        self._cache: dict[int, tuple[WorkerStats, dict[str, SiteTotals]]] = {}

    def __call__(self) -> dict[str, SiteTotals]:
        self._refresh_soon()
        own = self.own
        out = site_totals(own.requests, own.bytes_in, own.bytes_out)
        add_totals(out, families_site_totals(self.book.retired))
        cache: dict[int, tuple[WorkerStats, dict[str, SiteTotals]]] = {}
        for report in self.book.current():
            hit = self._cache.get(report.index)
            if hit is None or hit[0] is not report:
                hit = (report, families_site_totals(report.families))
            cache[report.index] = hit
            add_totals(out, hit[1])
        self._cache = cache
        return out

    def _refresh_soon(self) -> None:
        now = self.clock()
        if self.nursery is None or self._running or now - self._started < self.every_s:
            return
        self._started, self._running = now, True
        self.nursery.start_soon(self._refresh)

    async def _refresh(self) -> None:
        try:
            await self.refresh()  # bounded: the poll's own timeout
        finally:
            self._running = False
