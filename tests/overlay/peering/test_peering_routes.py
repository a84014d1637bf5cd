"""Routes on live federation streams (in-memory links, autojump clock): the owner's routes reach
the peer in the snapshot, a change reaches it as a delta on the same stream, and a peer from
before routes (no version-2 path) still imports the services, without routes."""

from __future__ import annotations

import pytest
import trio

from discovery.model import ServiceName
from overlay.federation.import_ import ImportTable
from overlay.peering import federation

from .test_peering import linked_sites, until

API = ServiceName("api", "default")
R1 = '{"address":"api.default","name":"one"}'
R2 = '{"address":"api.default","name":"two"}'


def routes_at(table: ImportTable) -> tuple[str, ...] | None:
    peer = table.peers.get("east")
    entry = None if peer is None else peer.services.get(API)
    return None if entry is None else entry.service.routes


async def test_routes_reach_the_peer_and_a_change_follows_on_the_same_stream(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with linked_sites() as sites:
        sites.east.set_export_routes({API: (R1,)})
        await until(sites.west.imports, lambda t: routes_at(t) == (R1,))
        epoch = sites.west.imports.latest.peers["east"].epoch
        sites.east.set_export_routes({API: (R2, R1)})  # a reload at the owner
        await until(sites.west.imports, lambda t: routes_at(t) == (R2, R1))
        sites.east.set_export_routes({})
        await until(sites.west.imports, lambda t: routes_at(t) == ())
        assert sites.west.imports.latest.peers["east"].epoch == epoch  # no new session
        export = sites.east._peers["west"].export_session
        assert export is not None
        stats = export.statistics()
        assert stats.snapshots_sent == 1 and stats.deltas_sent >= 2


async def test_a_peer_without_version_2_imports_the_services_without_routes(
    autojump_clock: trio.abc.Clock,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Both ends share the module: neither accepts the version-2 path any more, as a gateway
    # from before routes would not (its answer on that path is a 404).
    monkeypatch.setattr(federation, "FEDERATION_PATH_V2", "/isthmus.federation.v0/none")
    caplog.set_level("INFO", "isthmus.federation")
    async with linked_sites() as sites:
        sites.east.set_export_routes({API: (R1,)})
        await until(sites.west.imports, lambda t: routes_at(t) == ())
        await trio.sleep(5)
        assert routes_at(sites.west.imports.latest) == ()
        assert sites.west.status()["east"]["up"] is True
    assert any("does not take federation version 2" in r.getMessage() for r in caplog.records)
