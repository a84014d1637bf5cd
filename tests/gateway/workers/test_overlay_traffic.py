"""``/overlay``'s traffic figures in worker mode: the workers' counters from the supervisor's
stats book (real gateways' observers counting real exchanges), read without waiting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from discovery.steps import complete
from gateway.admin.overlay_view import overlay_view
from gateway.admin.traffic import SiteTotals, add_totals, families_site_totals, site_totals
from gateway.app import Gateway
from gateway.http.exchange import CallContext, Request
from gateway.workers.overlay_traffic import WorkerTraffic
from gateway.workers.stats import StatsBook, worker_stats

from .test_stats import gateway, over_a_socket, serve

SITE = "none"  # the ``site`` label of :func:`serve`'s exchanges (no site answered)
LOCAL = "aws-east"  # the site of the test config


def served_here(gw: Gateway, n: int) -> None:
    """``n`` real exchanges that local callers had answered by this site (the map's
    ``aws-east`` node, with ``nbytes`` of request body each)."""
    obs = gw.observer
    assert obs is not None
    ctx = CallContext(LOCAL, None, 1e9)
    for _ in range(n):
        rec = obs.begin_origin(Request(b"GET", b"http", b"api.payments.isthmus", b"/", ()), ctx)
        rec.site = LOCAL
        rec.status = 200
        obs.finish(rec)


def own_totals(gw: Gateway) -> dict[str, SiteTotals]:
    obs = gw.observer
    assert obs is not None
    return site_totals(obs.requests, obs.bytes_in, obs.bytes_out)


async def refresh_never() -> None:
    raise AssertionError("no refresh without a nursery")


async def test_the_totals_sum_the_supervisor_and_every_workers_last_report(
    tmp_path: Path,
) -> None:
    sup, one, two = [await gateway(tmp_path) for _ in range(3)]
    serve(sup, 1)
    serve(one, 2)
    serve(two, 5)
    book = StatsBook()
    for index, gw in enumerate((one, two)):
        book.record(over_a_socket(worker_stats(gw, index=index)))
    assert sup.observer is not None
    traffic = WorkerTraffic(sup.observer, book, refresh_never, None)
    assert traffic()[SITE].requests == 8.0
    # The exported form counts exactly what the live counters do.
    expected: dict[str, SiteTotals] = {}
    for gw in (sup, one, two):
        add_totals(expected, own_totals(gw))
    assert traffic() == expected
    assert families_site_totals(worker_stats(two).families) == own_totals(two)

    # Worker 1 is replaced (a new pid at its index): its counts stay, the new one's add.
    fresh = await gateway(tmp_path)
    serve(fresh, 3)
    report = worker_stats(fresh, index=1)
    book.record(over_a_socket(report.__class__(**{**_fields(report), "pid": report.pid + 1})))
    assert traffic()[SITE].requests == 11.0


def _fields(report: Any) -> dict[str, Any]:
    return {name: getattr(report, name) for name in report.__slots__}


async def test_the_overlay_rates_come_from_the_workers_counts(tmp_path: Path) -> None:
    sup, worker = await gateway(tmp_path), await gateway(tmp_path)
    book = StatsBook()
    assert sup.observer is not None
    now = [100.0]
    view = overlay_view(
        "aws-east",
        sup.peering,
        sup.effective_catalog,
        sup.observer,
        clock=lambda: now[0],
        totals=WorkerTraffic(sup.observer, book, refresh_never, None),
    )
    served_here(worker, 2)
    book.record(worker_stats(worker))
    complete(view().steps)
    served_here(worker, 30)  # the supervisor's own observer counts none of these
    book.record(worker_stats(worker))
    now[0] += 10.0
    doc = complete(view().steps)
    assert doc["metrics"] is True
    (here,) = [n for n in doc["nodes"] if n["site"] == LOCAL]
    assert here["traffic"]["local"] == {"requests_per_s": 3.0, "bytes_per_s": 0.0, "over_s": 10.0}


async def test_a_look_starts_at_most_one_background_refresh_per_interval(
    autojump_clock: trio.abc.Clock, tmp_path: Path
) -> None:
    sup = await gateway(tmp_path)
    assert sup.observer is not None
    rounds: list[float] = []
    release = trio.Event()

    async def refresh() -> None:
        rounds.append(trio.current_time())
        await release.wait()

    async with trio.open_nursery() as nursery:
        traffic = WorkerTraffic(sup.observer, StatsBook(), refresh, nursery, every_s=1.0)
        traffic()
        await trio.sleep(0.1)
        traffic()  # one round in flight: no second one
        await trio.sleep(5)
        traffic()  # still in flight, however old
        await trio.sleep(0.1)
        assert len(rounds) == 1
        release.set()
        await trio.sleep(0.1)
        traffic()  # the last round started long ago: a new one
        await trio.sleep(0.1)
        traffic()  # too soon after it
        await trio.sleep(0.1)
        assert len(rounds) == 2
        nursery.cancel_scope.cancel()
