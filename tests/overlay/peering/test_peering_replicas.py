"""Peering with a site of two replicas, over in-memory links (autojump clock).

``west`` lists site ``east`` by two replicas (two Peerings with the same site name and SPIFFE
ID, each with a healthy ``api.default``).  Links, PINGs and federation run for real; a cut
wire is a replica gone silent, which only its PING deadline notices.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, cast

import trio

from discovery.snapshot import Catalog
from discovery.watch import Watch
from overlay.federation.config import ExportConfig
from overlay.link.link import Link, LinkError
from overlay.peering.config import PeerSpec
from overlay.peering.peers import Peering
from overlay.peering.replica_set import ReplicaSet
from tests.overlay.identity.cases import SERVER_CHAIN, SERVER_KEY, TRUSTED
from tests.overlay.identity.certfactory import identity
from tests.overlay.peering.memory_links import MemoryNetwork, Wire
from tests.overlay.peering.test_peering import (
    API,
    EAST_ID,
    HANG_GUARD,
    SETTINGS,
    WEST_ID,
    catalog_with_api,
    until,
)

HOSTS = ("east1.test", "east2.test")


@dataclass
class Site:
    west: Peering
    replicas: dict[str, Peering]
    wires: dict[str, Wire] = field(default_factory=dict)
    down: set[str] = field(default_factory=set)  # hosts that are gone (dials fail)

    def kill(self, host: str) -> None:
        """The replica at ``host`` goes silent and cannot be dialed again."""
        self.down.add(host)
        self.wires[host].cut = True


@asynccontextmanager
async def replicated_east() -> AsyncIterator[Site]:
    ident = identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED))
    async with trio.open_nursery() as nursery:
        network = MemoryNetwork(nursery)
        inner = cast(Any, network.dialer(WEST_ID))
        wires: dict[str, Wire] = {}
        down: set[str] = set()

        async def dial(host: str, port: int, **kwargs: Any) -> Link:
            if host in down:
                raise LinkError(f"{host} is gone")
            link = await inner(host, port, **kwargs)
            wires[host] = network.wires[-1]  # no checkpoint in between: this dial's wire
            return cast(Link, link)

        specs = [PeerSpec("east", h, 1, EAST_ID, replica=f"{h}:1") for h in HOSTS]
        west = Peering(
            local_site="west",
            identity=ident,
            peers=specs,
            catalog=Watch(Catalog()),
            export_rules=[ExportConfig()],
            settings=SETTINGS,
            rng=lambda: 0.5,
            dial=cast(Any, dial),
        )
        replicas = {
            h: Peering(
                local_site="east",
                identity=ident,
                peers=[PeerSpec("west", "west.test", 1, WEST_ID, dial=False)],
                catalog=Watch(catalog_with_api()),
                export_rules=[ExportConfig()],
                settings=SETTINGS,
            )
            for h in HOSTS
        }
        network.add("west.test", west, WEST_ID)
        for h, peering in replicas.items():
            network.add(h, peering, EAST_ID)
            nursery.start_soon(peering.run)
        nursery.start_soon(west.run)
        yield Site(west, replicas, wires, down)
        nursery.cancel_scope.cancel()


async def wait_status(peering: Peering, check: Any) -> None:
    with trio.fail_after(HANG_GUARD):
        while not check(peering.status()["east"]):  # noqa: ASYNC110 -- status is no Watch
            await trio.sleep(0.1)


async def test_one_replica_gone_keeps_the_site_routed_all_gone_withdraws_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with replicated_east() as site:
        west = site.west
        await until(west.routes, lambda v: v.sites_for(API) == ("east",))
        await wait_status(west, lambda s: s["replicas_up"] == 2)
        assert isinstance(west.outbound("east"), ReplicaSet)
        assert west.replica_count("east") == 2
        # One replica's own link (the fleet push must reach each one, never "any of them").
        assert west.replicas("east") == tuple(f"{h}:1" for h in HOSTS)
        own = [west.replica_outbound("east", f"{h}:1") for h in HOSTS]
        assert None not in own and own[0] is not own[1]
        assert not any(isinstance(o, ReplicaSet) for o in own)
        assert west.replica_outbound("east", "elsewhere:1") is None
        assert west.replica_changed("east", f"{HOSTS[0]}:1") is not None
        assert west.replica_changed("nowhere", f"{HOSTS[0]}:1") is None
        await until(west.imports, lambda t: len(t.replicas) == 2)
        assert set(west.imports.latest.replicas) == {f"east@{h}:1" for h in HOSTS}
        assert list(west.imports.latest.peers) == ["east"]

        views: list[tuple[str, ...]] = []

        async def record() -> None:
            seen = -1
            while True:
                seen, view = await west.routes.wait_newer(seen)
                views.append(view.sites_for(API))

        changed = west.link_changed("east")
        assert changed is not None and not changed.is_set()
        assert west.link_changed("nowhere") is None
        async with trio.open_nursery() as nursery:
            nursery.start_soon(record)
            site.kill(HOSTS[0])  # replica 1 goes silent
            await wait_status(west, lambda s: s["replicas_up"] == 1)
            await trio.sleep(SETTINGS.import_grace + 1)  # past its copy's grace too
            nursery.cancel_scope.cancel()
        assert views and all(v == ("east",) for v in views)  # never dropped, never re-added
        assert changed.is_set()  # a replica's link went: waiters on the site hear of it
        assert west.replica_outbound("east", f"{HOSTS[0]}:1") is None
        assert west.replica_outbound("east", f"{HOSTS[1]}:1") is not None
        one = west.outbound("east")
        assert one is not None and not isinstance(one, ReplicaSet)
        table = west.imports.latest
        assert set(table.replicas) == {f"east@{HOSTS[1]}:1"} and not table.peers["east"].stale
        status = west.status()["east"]
        assert status["up"] and [r["up"] for r in status["replicas"]] == [False, True]

        site.kill(HOSTS[1])  # the last replica goes: now the site is down
        await until(west.routes, lambda v: v.sites_for(API) == ())
        assert west.outbound("east") is None
        assert west.imports.latest.peers["east"].stale


async def test_a_replica_removed_by_reload_leaves_the_other_linked(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with replicated_east() as site:
        west = site.west
        await wait_status(west, lambda s: s["replicas_up"] == 2)
        await until(west.imports, lambda t: len(t.replicas) == 2)
        kept = PeerSpec("east", HOSTS[1], 1, EAST_ID, replica=f"{HOSTS[1]}:1")
        closed = await west.set_peers([kept])
        assert closed == ("east",)
        assert west.replica_count("east") == 1
        assert west.status()["east"]["up"] and west.outbound("east") is not None
        assert set(west.imports.latest.replicas) == {f"east@{HOSTS[1]}:1"}
        assert west.routes.latest.sites_for(API) == ("east",)
