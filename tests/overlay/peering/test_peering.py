"""Peering over in-memory links (autojump clock): links publish routes, deadlines withdraw them.

Two Peerings, ``east`` (dials, has a healthy ``api.default`` endpoint and exports everything)
and ``west`` (accepts, has nothing of its own), linked by :mod:`.memory_links`.  HTTP/2, the
reverse connection, PING liveness and federation run for real; only the sockets and TLS are
in memory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import trio

from discovery.catalog import apply
from discovery.events import Resynced
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from discovery.watch import Watch
from foundation.spiffe_id import SpiffeId
from overlay.address import L7Address
from overlay.federation.config import ExportConfig
from overlay.peering.config import PeeringSettings, PeerSpec
from overlay.peering.peers import Peering
from tests.overlay.identity.cases import SERVER_CHAIN, SERVER_KEY, TRUSTED
from tests.overlay.identity.certfactory import identity
from tests.overlay.peering.memory_links import MemoryNetwork

EAST_ID = SpiffeId.parse("spiffe://a.test/gateway/east")
WEST_ID = SpiffeId.parse("spiffe://a.test/gateway/west")
API = L7Address("api", "default")
PING_INTERVAL = 1.0
PING_TIMEOUT = 1.0
GRACE = 10.0
SETTINGS = PeeringSettings(
    ping_interval=PING_INTERVAL, ping_timeout=PING_TIMEOUT, import_grace=GRACE
)
T = TypeVar("T")
HANG_GUARD = 60.0  # virtual seconds: far beyond any deadline these tests configure


def catalog_with_api() -> Catalog:
    endpoint = Endpoint(ServiceName("api", "default"), "127.0.0.1", 8080)
    catalog, _ = apply(
        Catalog(), Resynced("static", (endpoint,), "1", 0.0), now=0.0, policy=Policy()
    )
    return catalog


@dataclass
class Sites:
    east: Peering
    west: Peering
    network: MemoryNetwork


@asynccontextmanager
async def linked_sites(*, accept_delay: float = 0.0) -> AsyncIterator[Sites]:
    ident = identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED))
    async with trio.open_nursery() as nursery:
        network = MemoryNetwork(nursery, accept_delay=accept_delay)
        east = Peering(
            local_site="east",
            identity=ident,
            peers=[PeerSpec("west", "west.test", 1, WEST_ID)],
            catalog=Watch(catalog_with_api()),
            export_rules=[ExportConfig()],
            settings=SETTINGS,
            rng=lambda: 0.5,
            dial=cast(Any, network.dialer(EAST_ID)),
        )
        west = Peering(
            local_site="west",
            identity=ident,
            peers=[PeerSpec("east", "east.test", 1, EAST_ID, dial=False)],
            catalog=Watch(Catalog()),
            export_rules=[ExportConfig()],
            settings=SETTINGS,
        )
        network.add("west.test", west, WEST_ID)
        network.add("east.test", east, EAST_ID)
        nursery.start_soon(east.run)
        nursery.start_soon(west.run)
        yield Sites(east, west, network)
        nursery.cancel_scope.cancel()


async def until(watch: Watch[T], check: Callable[[T], bool]) -> float:
    """Wait (virtual time, bounded) until ``check`` holds for the watched value; return the
    time it first did."""
    seen = -1
    with trio.fail_after(HANG_GUARD):
        while True:
            seen, value = await watch.wait_newer(seen)
            if check(value):
                return trio.current_time()


async def test_a_link_up_publishes_the_peers_routes(autojump_clock: trio.abc.Clock) -> None:
    async with linked_sites() as sites:
        assert sites.west.routes.latest.sites_for(API) == ()
        await until(sites.west.routes, lambda v: v.sites_for(API) == ("east",))
        assert sites.west.outbound("east") is not None
        assert sites.east.outbound("west") is not None
        assert sites.west.status()["east"]["up"] is True
        assert not sites.west.imports.latest.peers["east"].stale
        # east's own view lists itself (local first); west exports nothing to it
        assert sites.east.routes.latest.sites_for(API) == ("east",)


async def test_a_peer_slow_to_answer_its_first_ping_keeps_the_link(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A peer starved at start-up (it serves the new link only after 5 s, five PING
    timeouts) keeps the link: the first PING's deadline is the connect timeout (10 s), so
    east neither declares it down nor redials."""
    assert SETTINGS.connect_timeout == 10.0
    async with linked_sites(accept_delay=5.0) as sites:
        await until(sites.west.routes, lambda v: v.sites_for(API) == ("east",))
        await trio.sleep(30)
        assert len(sites.network.wires) == 1  # one dial, never a redial
        assert sites.east.outbound("west") is not None
        assert sites.east.status()["west"]["up"] is True


async def test_a_silent_link_withdraws_routes_at_the_ping_deadline_then_imports_after_grace(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with linked_sites() as sites:
        west = sites.west
        await until(west.routes, lambda v: v.sites_for(API) == ("east",))
        sites.network.reachable = False  # east's redials must not bring the link back
        (wire,) = sites.network.wires
        wire.cut = True
        cut_at = trio.current_time()

        # Silence alone is not a dead link: nothing changes before a PING can have expired.
        await trio.sleep(PING_TIMEOUT * 0.9)
        assert west.routes.latest.sites_for(API) == ("east",)
        assert west.outbound("east") is not None

        down_at = await until(west.routes, lambda v: v.sites_for(API) == ())
        assert cut_at + PING_TIMEOUT <= down_at <= cut_at + PING_INTERVAL + PING_TIMEOUT + 0.5
        assert west.outbound("east") is None
        # The imports stay, marked stale, for the grace...
        await until(west.imports, lambda v: "east" in v.peers)
        peer = west.imports.latest.peers["east"]
        assert peer.stale
        stale_since = peer.stale_since
        assert stale_since is not None
        await trio.sleep_until(stale_since + GRACE * 0.9)
        assert "east" in west.imports.latest.peers
        # ...and are withdrawn when it ends, with nothing else happening.
        gone_at = await until(west.imports, lambda v: "east" not in v.peers)
        assert stale_since + GRACE <= gone_at <= stale_since + GRACE + 0.5


async def test_a_peer_back_before_the_grace_is_routed_again_on_a_new_link(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with linked_sites() as sites:
        west = sites.west
        await until(west.routes, lambda v: v.sites_for(API) == ("east",))
        sites.network.reachable = False
        sites.network.wires[0].cut = True
        await until(west.imports, lambda v: "east" in v.peers and v.peers["east"].stale)
        stale_since = west.imports.latest.peers["east"].stale_since
        assert stale_since is not None
        # The route view is rebuilt by its own (paced) task after the imports change: wait for
        # it rather than read it in the same instant.
        await until(west.routes, lambda v: v.sites_for(API) == ())

        sites.network.reachable = True  # east's next redial (on its backoff) gets through
        back_at = await until(west.routes, lambda v: v.sites_for(API) == ("east",))
        assert back_at < stale_since + GRACE
        assert len(sites.network.wires) >= 2  # a new link, not the silent one
        assert not west.imports.latest.peers["east"].stale
        assert west.status()["east"]["links_established"] == 2
