"""The link pool over in-memory links (autojump clock): two Peerings, ``east`` dials ``west``,
whose links take only :data:`SLOTS` streams each.

HTTP/2, the reverse connection, PING liveness and federation run for real (see
:mod:`.memory_links`).  A held stream is a ``CONNECT``-like request west answers 200 and keeps
until east closes it.  What must hold: a caller holding more streams than one link takes gets
them on an extra link; the peer is down only when all its links are; the export is never
duplicated onto an extra link; an idle extra link is drained and closed, never the primary.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import trio
import trio.lowlevel

from discovery.watch import Watch
from foundation.spiffe_id import SpiffeId
from overlay.federation.config import ExportConfig
from overlay.h2.limits import H2Limits
from overlay.h2.stream import H2Stream, TunnelError
from overlay.peering.config import PeeringSettings, PeerSpec
from overlay.peering.link_pool import IDLE_CLOSE_S
from overlay.peering.peers import Peering
from overlay.peering.pool import PeerPool
from tests.overlay.identity.cases import SERVER_CHAIN, SERVER_KEY, TRUSTED
from tests.overlay.identity.certfactory import identity
from tests.overlay.peering.memory_links import MemoryNetwork
from tests.overlay.peering.test_peering import API, catalog_with_api, until

EAST_ID = SpiffeId.parse("spiffe://a.test/gateway/east")
WEST_ID = SpiffeId.parse("spiffe://a.test/gateway/west")
SLOTS = 4  # west's SETTINGS_MAX_CONCURRENT_STREAMS on every link
HANG_GUARD = 120.0  # virtual seconds


@dataclass
class Sites:
    east: Peering
    west: Peering
    network: MemoryNetwork


async def hold(site: str, stream: H2Stream) -> None:
    """West's answer to every stream east opens: 200, then keep it until east closes it."""
    await stream.send_headers([(":status", "200")])
    while await stream.receive_some(1024):
        pass
    await stream.send_eof()


@asynccontextmanager
async def pooled_sites(max_links: int = 3, accepted_extras: int = 63) -> AsyncIterator[Sites]:
    ident = identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED))
    base = PeeringSettings(ping_interval=1.0, ping_timeout=1.0, import_grace=10.0)
    async with trio.open_nursery() as nursery:
        network = MemoryNetwork(nursery)
        east = Peering(
            local_site="east",
            identity=ident,
            peers=[PeerSpec("west", "west.test", 1, WEST_ID)],
            catalog=Watch(catalog_with_api()),
            export_rules=[ExportConfig()],
            settings=PeeringSettings(
                ping_interval=1.0,
                ping_timeout=1.0,
                import_grace=10.0,
                max_links_per_peer=max_links,
            ),
            rng=lambda: 0.5,
            dial=cast(Any, network.dialer(EAST_ID)),
        )
        west = Peering(
            local_site="west",
            identity=ident,
            peers=[PeerSpec("east", "east.test", 1, EAST_ID, dial=False)],
            catalog=Watch(catalog_with_api()),
            export_rules=[ExportConfig()],
            settings=PeeringSettings(
                ping_interval=base.ping_interval,
                ping_timeout=base.ping_timeout,
                import_grace=base.import_grace,
                h2_limits=H2Limits(max_concurrent_streams=SLOTS),
                max_accepted_extras=accepted_extras,
            ),
            stream_handler=hold,
        )
        network.add("west.test", west, WEST_ID)
        network.add("east.test", east, EAST_ID)
        nursery.start_soon(east.run)
        nursery.start_soon(west.run)
        await until(west.routes, lambda v: "east" in v.sites_for(API))
        await until(east.routes, lambda v: "west" in v.sites_for(API))
        yield Sites(east, west, network)
        nursery.cancel_scope.cancel()


async def open_held(east: Peering, count: int) -> list[H2Stream]:
    """Open ``count`` streams from east to west at once; each answered 200 and held."""
    opened: list[H2Stream] = []

    async def one() -> None:
        conn = east.outbound("west")
        assert conn is not None
        stream = await conn.open_stream([(":method", "CONNECT"), (":authority", "api.default:80")])
        assert dict(await stream.response_headers())[b":status"] == b"200"
        opened.append(stream)

    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            for _ in range(count):
                nursery.start_soon(one)
                await trio.lowlevel.checkpoint()
    return opened


def links(peering: Peering, peer: str) -> list[dict[str, Any]]:
    return cast(list[dict[str, Any]], peering.status()[peer]["links"])


async def test_more_streams_than_one_link_takes_get_an_extra_link(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with pooled_sites() as sites:
        assert isinstance(sites.east.outbound("west"), PeerPool)
        streams = await open_held(sites.east, 2 * SLOTS)
        assert len(streams) == 2 * SLOTS
        rows = links(sites.east, "west")
        # Each link of a dialer also carries its reverse connection's stream, and the primary
        # the export: 2 * SLOTS held streams need three links of SLOTS slots.
        assert [(r["role"], r["dialed"]) for r in rows] == [
            ("primary", True),
            ("extra", True),
            ("extra", True),
        ]
        assert all(r["open_streams"] <= r["max_streams"] == SLOTS for r in rows), rows
        assert sum(r["open_streams"] for r in rows) == 2 * SLOTS + 3 + 1
        # west, accept-only, sees the extra links as such, beside its primary
        assert [r["role"] for r in links(sites.west, "east")] == ["primary", "extra", "extra"]
        assert sites.east.status()["west"]["links_established"] == 1
        for stream in streams:
            await stream.aclose()


async def test_the_export_is_never_duplicated_onto_an_extra_link(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with pooled_sites() as sites:
        streams = await open_held(sites.east, 2 * SLOTS)
        await trio.sleep(5.0)  # several export/ack rounds; nothing must start a second export
        rows = links(sites.east, "west")
        assert len(rows) >= 2
        # Each of east's links carries its reverse connection's stream; the held streams;
        # and one export stream in all.
        exports = sum(r["open_streams"] for r in rows) - len(rows) - len(streams)
        assert exports == 1, rows
        assert not sites.west.imports.latest.peers["east"].stale
        for stream in streams:
            await stream.aclose()


async def test_the_peer_stays_up_while_one_of_its_links_is(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with pooled_sites() as sites:
        streams = await open_held(sites.east, SLOTS + 1)
        await trio.sleep(0.5)  # (virtual) a link the pool asked for last is up by then
        before = len(links(sites.east, "west"))
        assert before >= 2
        sites.network.reachable = False  # no redial: only the extra links are left
        sites.network.wires[0].cut = True  # the primary link goes silent: its PINGs expire
        with trio.fail_after(HANG_GUARD):
            while len(links(sites.east, "west")) == before:
                await trio.sleep(0.5)
                assert sites.east.outbound("west") is not None
        # An extra link took the primary's place (and federation with it) on both sides.
        rows = links(sites.east, "west")
        assert len(rows) == before - 1 and rows[0]["role"] == "primary", rows
        assert links(sites.west, "east")[0]["role"] == "primary"
        status = sites.east.status()["west"]
        assert status["up"] is True
        assert status["links_established"] == 1  # the peer never went down
        # The imports never went stale on either side: the export resumed on the new primary.
        await trio.sleep(5.0)
        assert not sites.west.imports.latest.peers["east"].stale
        assert not sites.east.imports.latest.peers["west"].stale
        assert sites.west.status()["east"]["export_version"] is not None
        more = await open_held(sites.east, 1)  # and streams still go through
        for stream in streams + more:
            await stream.aclose()


async def test_an_idle_extra_link_is_drained_and_closed_never_the_primary(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with pooled_sites() as sites:
        streams = await open_held(sites.east, SLOTS + 1)
        assert len(links(sites.east, "west")) >= 2
        for stream in streams:
            await stream.aclose()
        with trio.fail_after(HANG_GUARD + 3 * IDLE_CLOSE_S):
            while len(links(sites.east, "west")) != 1:  # noqa: ASYNC110 -- a status, not an event
                await trio.sleep(1.0)
        (row,) = links(sites.east, "west")
        assert row["role"] == "primary"
        await trio.sleep(3 * IDLE_CLOSE_S)
        assert len(links(sites.east, "west")) == 1  # the last link stays
        assert sites.east.status()["west"]["links_established"] == 1


async def load(east: Peering) -> None:
    """One held stream, or none: a stream may land on a link the peer refuses a moment later
    (the router would try it elsewhere)."""
    with contextlib.suppress(TunnelError):
        await open_held(east, 1)


async def test_a_peer_gets_no_more_extra_links_than_allowed(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with pooled_sites(max_links=4, accepted_extras=1) as sites:
        async with trio.open_nursery() as nursery:
            for _ in range(3 * SLOTS):  # more than two links take: east wants a third and more
                nursery.start_soon(load, sites.east)
            await trio.sleep(30.0)  # (virtual) east tries again and again on its backoff
            west_rows = links(sites.west, "east")
            east_rows = links(sites.east, "west")
            nursery.cancel_scope.cancel()
        assert [r["role"] for r in west_rows] == ["primary", "extra"], west_rows
        assert len(east_rows) == 2, east_rows
        assert sites.east.status()["west"]["up"] is True
