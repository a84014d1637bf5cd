"""RouteSources: local and imported routes become one rule table, and the owned routes go to
the exports (the Trio adapter, with a stand-in for peering: only its import watch and the
exported routes are used)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import trio

from discovery.model import ServiceName
from discovery.watch import Watch
from gateway.config.load import load_text
from gateway.config.model import GatewayConfig
from gateway.routes.forward import Mirrors, RouteRules
from gateway.routes.owned import owned_route_texts
from gateway.routes.sources import RouteSources
from overlay.federation.import_ import ImportTable, ImportUpdate
from overlay.federation.protocol import ExportedService
from tests.gateway.config.config_kit import GOOD

API = ServiceName("api", "payments")
KEY = ("api", "payments", None)
SITE_C = GOOD.replace('name = "aws-east"', 'name = "c"').replace(
    'name = "gcp-west"', 'name = "a"'
) + (
    '\n[[peers]]\nname = "b"\naddress = "127.0.3.1"\nport = 15443\n'
    'spiffe_id = "spiffe://b.isthmus.test/isthmus/gateway/b"\n'
)
TO_B = """
[[routes]]
address = "api.payments"
name = "to-b"
backends = [{ service = "api.payments", site = "b" }]
"""
LOCAL_WEB = """
[[routes]]
address = "web.payments"
name = "limited"
rate_limit = { requests_per_s = 0.001, burst = 1, key = "route" }
"""


def config(extra: str = "") -> GatewayConfig:
    return load_text(SITE_C + extra, base_dir=Path("/etc/isthmus"))


class StandInPeering:
    def __init__(self) -> None:
        self.imports: Watch[ImportTable] = Watch(ImportTable(grace=10.0))
        self.exported: dict[ServiceName, tuple[str, ...]] = {}

    def set_export_routes(self, routes: Any) -> None:
        self.exported = dict(routes)


class StandInRouter:
    def __init__(self) -> None:
        self.rules: RouteRules | None = None
        self.mirrors = Mirrors()


def texts(toml: str, owner: str) -> tuple[str, ...]:
    cfg = load_text(
        SITE_C.replace('name = "c"', f'name = "{owner}"').replace(
            f'name = "{owner}"\naddress', 'name = "c"\naddress'
        )
        + toml,
        base_dir=Path("/etc/isthmus"),
    )
    return owned_route_texts(cfg.routes, owner)[0][API]


def exported(site: str, version: int, routes: tuple[str, ...]) -> ImportUpdate:
    svc = ExportedService(API, ("http1",), 1, 1, 1, (), routes)
    return ImportUpdate(site, "e1", version, True, (svc,))


async def settle(sources: RouteSources, peering: StandInPeering, table: ImportTable) -> None:
    peering.imports.publish(table)
    for _ in range(20):  # a few checkpoints: the watcher wakes and rebuilds
        await trio.lowlevel.checkpoint()


async def test_imported_routes_join_the_local_ones_and_follow_the_import_table(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "isthmus.routes")
    peering, router = StandInPeering(), StandInRouter()
    sources = RouteSources(router, peering, config(LOCAL_WEB))  # type: ignore[arg-type]
    assert list(router.rules.table.by_address) == [("web", "payments", None)]  # type: ignore[union-attr]
    local_actions = dict(router.rules._actions)  # type: ignore[union-attr]
    async with trio.open_nursery() as nursery:
        await nursery.start(sources.run)
        table = peering.imports.latest.apply(exported("a", 1, texts(TO_B, "a")), 0.0)
        await settle(sources, peering, table)
        assert router.rules is not None and KEY in router.rules.table.by_address
        assert router.rules.table.by_address[KEY][0].label == "a/to-b"
        # the local route's rate-limit state survived the import change
        actions = router.rules._actions
        assert all(actions.get(k) is v for k, v in local_actions.items())
        # a health change alone does not rebuild
        before = router.rules
        same = ExportedService(API, ("http1",), 0, 1, 0, (), texts(TO_B, "a"))
        await settle(sources, peering, table.apply(ImportUpdate("a", "e1", 2, False, (same,)), 1.0))
        assert router.rules is before
        # b sends other routes for the same address: a (first by priority) is followed
        other = texts(TO_B.replace('site = "b"', 'site = "a"'), "b")
        table = table.apply(exported("b", 1, other), 2.0)
        await settle(sources, peering, table)
        await settle(sources, peering, table.confirm("b", 3.0))
        assert sources.status()["imported_routes"]["api.payments"] == {
            "site": "a",
            "routes": ["a/to-b"],
            "conflict": ["b"],
        }
        # the peer withdraws: the imported route goes, the local one stays
        await settle(sources, peering, table.withdraw("a").withdraw("b"))
        assert list(router.rules.table.by_address) == [("web", "payments", None)]
        nursery.cancel_scope.cancel()
    conflicts = [r for r in caplog.records if "other routes" in r.getMessage()]
    assert len(conflicts) == 1, [r.getMessage() for r in caplog.records]


async def test_a_local_route_shadows_and_a_bad_import_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "isthmus.routes")
    peering, router = StandInPeering(), StandInRouter()
    sources = RouteSources(router, peering, config())  # type: ignore[arg-type]
    assert router.rules is None and peering.exported == {}
    bad = '{"address":"api.payments","request_headers":{"add":{"x-isthmus-site":"x"}}}'
    async with trio.open_nursery() as nursery:
        await nursery.start(sources.run)
        table = peering.imports.latest.apply(exported("a", 1, (bad, *texts(TO_B, "a"))), 0.0)
        await settle(sources, peering, table)
        await settle(sources, peering, table.confirm("a", 1.0))
        assert sources.status()["rejected_routes"][0]["position"] == 0
        assert router.rules is None  # the service's routes are taken whole or not at all
        # the owner fixes its route: followed
        table = table.apply(exported("a", 2, texts(TO_B, "a")), 2.0)
        await settle(sources, peering, table)
        assert router.rules is not None and KEY in router.rules.table.by_address
        # a reload adds a local route for the address: it wins, and is exported
        sources.set_config(config(TO_B.replace('site = "b"', 'site = "c"')))
        assert router.rules is not None
        assert router.rules.table.by_address[KEY][0].label == "to-b"
        assert sources.status()["shadowed_routes"] == ["api.payments"]
        assert list(peering.exported) == [API]
        nursery.cancel_scope.cancel()
    rejected = [r for r in caplog.records if "rejected" in r.getMessage()]
    assert len(rejected) == 1 and "reserved" in rejected[0].getMessage()
