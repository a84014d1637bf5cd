"""Ejections reach the catalog view (``/catalog``) and the export to peers, and leave again."""

from __future__ import annotations

import trio

from discovery.model import Endpoint
from discovery.snapshot import Catalog
from discovery.watch import Watch
from gateway.cluster.outlier import OutlierPolicy
from gateway.cluster.outlier_detector import OutlierDetector, serve_effective_catalog
from gateway.commands.catalog import catalog_json
from overlay.federation.config import ExportConfig
from overlay.federation.export_feed import PeerExport
from tests.gateway.upstream.upstream_kit import SVC, watch_of

POLICY = OutlierPolicy(consecutive_5xx=3, base_ejection_time=30.0, max_ejected_percent=50)
A = Endpoint(SVC, "127.0.0.1", 8001)
B = Endpoint(SVC, "127.0.0.1", 8002)


def rows(catalog: Catalog) -> dict[int, dict[str, object]]:
    doc = catalog_json(catalog, trio.current_time())
    return {row["port"]: row for row in doc["endpoints"]}


async def newer(watch: Watch[Catalog], seen: int) -> tuple[int, Catalog]:
    with trio.fail_after(5):
        return await watch.wait_newer(seen)


async def test_an_ejection_shows_in_catalog_json_and_export_then_is_released(
    autojump_clock: trio.abc.Clock,
) -> None:
    source = watch_of(A, B)
    detector = OutlierDetector(lambda _svc: POLICY)
    effective: Watch[Catalog] = Watch(Catalog())
    export = PeerExport("west", [ExportConfig()])
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_effective_catalog, source, detector.ejections, effective)
        seen, catalog = await newer(effective, 0)
        assert export.update(catalog, trio.current_time()) is None  # first: full compute
        assert export.view[SVC].healthy_count == 2
        assert all(r["routable"] and r["ejected"] is None for r in rows(catalog).values())

        for _ in range(3):
            detector.record(A, "5xx", service_size=2)
        seen, catalog = await newer(effective, seen)
        view = rows(catalog)
        assert view[8001]["routable"] is False
        assert "3 consecutive 5xx" in str(view[8001]["ejected"])
        assert view[8002]["routable"] is True and view[8001]["healthy"] is True
        # The incremental export sees the change (the source's maps did not change).
        assert export.update(catalog, trio.current_time()) == frozenset({SVC})
        assert export.view[SVC].healthy_count == 1 and export.view[SVC].total_count == 2

        await trio.sleep(30)  # the ejection ends with nobody calling: republished by itself
        seen, catalog = await newer(effective, seen)
        assert all(r["routable"] for r in rows(catalog).values())
        assert export.update(catalog, trio.current_time()) == frozenset({SVC})
        assert export.view[SVC].healthy_count == 2
        nursery.cancel_scope.cancel()


async def test_a_source_update_keeps_the_ejection_marked(autojump_clock: trio.abc.Clock) -> None:
    source = watch_of(A, B)
    detector = OutlierDetector(lambda _svc: POLICY)
    effective: Watch[Catalog] = Watch(Catalog())
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_effective_catalog, source, detector.ejections, effective)
        for _ in range(3):
            detector.record(A, "5xx", service_size=2)
        await trio.sleep(1)
        source.publish(watch_of(A, B, Endpoint(SVC, "127.0.0.1", 8003)).latest)
        await trio.sleep(1)
        view = rows(effective.latest)
        assert sorted(view) == [8001, 8002, 8003] and view[8001]["routable"] is False
        nursery.cancel_scope.cancel()


async def test_a_reload_keeps_or_lifts_the_ejection_in_the_view_and_export(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A policy swap (gateway/reload/traffic.py): an unrelated change keeps the ejection in
    /catalog and the export; a shorter ejection time ends it sooner there; detection off
    lifts it at once.  The ejection is counted once throughout."""
    source = watch_of(A, B)
    detector = OutlierDetector(lambda _svc: POLICY)
    effective: Watch[Catalog] = Watch(Catalog())
    export = PeerExport("west", [ExportConfig()])
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_effective_catalog, source, detector.ejections, effective)
        seen, catalog = await newer(effective, 0)
        export.update(catalog, trio.current_time())
        for _ in range(3):
            detector.record(A, "5xx", service_size=2)
        seen, catalog = await newer(effective, seen)
        export.update(catalog, trio.current_time())
        assert export.view[SVC].healthy_count == 1
        # Unrelated: another service's settings.  Nothing republished, still ejected.
        detector.set_policy(lambda svc: POLICY if svc == SVC else None)
        await trio.sleep(1)
        assert effective.count == seen and rows(effective.latest)[8001]["routable"] is False
        # Shorter: ends 5 s after the reload, not 30 s after the ejection.
        detector.set_policy(lambda _svc: OutlierPolicy(consecutive_5xx=3, max_ejection_time=5.0))
        await trio.sleep(5)
        seen, catalog = await newer(effective, seen)
        assert all(r["routable"] for r in rows(catalog).values())
        assert trio.current_time() < 30
        # Ejected again, then detection turned off: lifted and re-exported as healthy at once.
        for _ in range(3):
            detector.record(A, "5xx", service_size=2)
        seen, catalog = await newer(effective, seen)
        assert rows(catalog)[8001]["routable"] is False
        assert detector.set_policy(lambda _svc: None) == 1
        seen, catalog = await newer(effective, seen)
        assert all(r["routable"] and r["ejected"] is None for r in rows(catalog).values())
        export.update(catalog, trio.current_time())
        assert export.view[SVC].healthy_count == 2
        assert detector.ejected_total == {"api.default": 2}
        nursery.cancel_scope.cancel()
