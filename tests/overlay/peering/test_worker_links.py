"""Worker links over in-memory links (autojump clock).

Site ``east`` runs as a supervisor and one worker: ``sup`` is a primary-mode Peering (it
dials ``west`` and federates), ``worker`` a worker-mode one (it dials ``west`` too, with the
worker SNI, and keeps a *worker link*: streams only).  ``west`` is a primary-mode site
(``workers = 0``) that accepts both and exports its ``api``.  HTTP/2, the reverse connection,
PINGs and federation run for real (:mod:`.memory_links`).

What must hold: the worker reaches west and streams flow both ways on its link; no
federation or control stream ever runs on a worker link, and one opened there is refused with
a stream reset while the link stays up; losing the primary link never promotes the worker
link -- the export resumes on the redialed primary.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, cast

import pytest
import trio

from discovery.catalog import apply
from discovery.events import Resynced
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from discovery.watch import Watch
from foundation.errors import H2_REFUSED_STREAM
from overlay.address import L7Address
from overlay.federation.config import ExportConfig
from overlay.federation.stream import FEDERATION_PATH_V2
from overlay.h2.connection import H2Connection
from overlay.h2.limits import H2Limits
from overlay.h2.stream import H2Stream, StreamReset
from overlay.peering.config import PeeringSettings, PeerSpec
from overlay.peering.links import PeerLinks
from overlay.peering.peers import Peering
from tests.overlay.identity.cases import SERVER_CHAIN, SERVER_KEY, TRUSTED
from tests.overlay.identity.certfactory import identity
from tests.overlay.peering.memory_links import MemoryNetwork
from tests.overlay.peering.test_peering import (
    API,
    EAST_ID,
    HANG_GUARD,
    SETTINGS,
    WEST_ID,
    catalog_with_api,
    until,
)

#: The SNI a worker dials with (``overlay.link.handoff.WORKER_LINK_SNI``).
WORKER_SNI = "worker-link.isthmus.invalid"
#: A service only east's worker has: were the worker ever to export, west would import it.
SOLO = L7Address("solo", "default")
CONTROL_PATH = "/isthmus/test-control"
SLOTS = 4  # west's SETTINGS_MAX_CONCURRENT_STREAMS in the pool test


def catalog_with_solo() -> Catalog:
    endpoint = Endpoint(ServiceName("solo", "default"), "127.0.0.1", 9090)
    catalog, _ = apply(
        Catalog(), Resynced("static", (endpoint,), "1", 0.0), now=0.0, policy=Policy()
    )
    return catalog


@dataclass
class Sites:
    sup: Peering
    worker: Peering
    west: Peering
    network: MemoryNetwork
    served: list[str]  # west: the site of every traffic stream it answered
    worker_served: list[str]  # east's worker: likewise
    control_calls: list[str]  # west's and the worker's control path's handler calls


def rows(peering: Peering, peer: str) -> list[tuple[str, bool]]:
    return [(r["role"], r["dialed"]) for r in peering.status()[peer]["links"]]


def west_state(sites: Sites) -> PeerLinks:
    return sites.west._peers["east"]


@asynccontextmanager
async def east_with_a_worker(
    *, worker_max_links: int = 1, slots: int | None = None
) -> AsyncIterator[Sites]:
    """``slots``: west's SETTINGS_MAX_CONCURRENT_STREAMS (None: the default)."""
    ident = identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED))
    served: list[str] = []
    worker_served: list[str] = []
    control_calls: list[str] = []

    async def answer(into: list[str], site: str, stream: H2Stream) -> None:
        into.append(site)
        await stream.send_headers([(":status", "200")])
        while await stream.receive_some(1024):
            pass
        await stream.send_eof()

    async def control(site: str, stream: H2Stream) -> None:
        control_calls.append(site)
        await stream.send_headers([(":status", "204")], end_stream=True)

    async with trio.open_nursery() as nursery:
        network = MemoryNetwork(nursery)
        west_peer = [PeerSpec("west", "west.test", 1, WEST_ID)]
        sup = Peering(
            local_site="east",
            identity=ident,
            peers=west_peer,
            catalog=Watch(Catalog()),
            export_rules=[ExportConfig()],
            settings=SETTINGS,
            rng=lambda: 0.5,
            dial=cast(Any, network.dialer(EAST_ID)),
        )
        worker = Peering(
            local_site="east",
            identity=ident,
            peers=west_peer,
            catalog=Watch(catalog_with_solo()),
            export_rules=[ExportConfig()],
            settings=PeeringSettings(
                ping_interval=SETTINGS.ping_interval,
                ping_timeout=SETTINGS.ping_timeout,
                import_grace=SETTINGS.import_grace,
                max_links_per_peer=worker_max_links,
            ),
            stream_handler=lambda site, stream: answer(worker_served, site, stream),
            rng=lambda: 0.5,
            dial=cast(Any, network.dialer(EAST_ID)),
            mode="worker",
            server_name=WORKER_SNI,
        )
        west = Peering(
            local_site="west",
            identity=ident,
            peers=[PeerSpec("east", "east.test", 1, EAST_ID, dial=False)],
            catalog=Watch(catalog_with_api()),
            export_rules=[ExportConfig()],
            settings=PeeringSettings(
                ping_interval=SETTINGS.ping_interval,
                ping_timeout=SETTINGS.ping_timeout,
                import_grace=SETTINGS.import_grace,
                h2_limits=None if slots is None else H2Limits(max_concurrent_streams=slots),
            ),
            stream_handler=lambda site, stream: answer(served, site, stream),
        )
        west.add_stream_path(CONTROL_PATH, control)
        worker.add_stream_path(CONTROL_PATH, control)
        network.add("west.test", west, WEST_ID)
        network.add("east.test", sup, EAST_ID)
        nursery.start_soon(sup.run)
        await until(sup.routes, lambda v: "west" in v.sites_for(API))
        nursery.start_soon(worker.run)
        sites = Sites(sup, worker, west, network, served, worker_served, control_calls)
        with trio.fail_after(HANG_GUARD):
            while ("worker", False) not in rows(west, "east"):  # noqa: ASYNC110 -- a status
                await trio.sleep(0.1)
        yield sites
        nursery.cancel_scope.cancel()


async def open_on(conn: Any, path: str = "/") -> H2Stream:
    return cast(
        H2Stream,
        await conn.open_stream(
            [(":method", "GET"), (":scheme", "https"), (":authority", "x"), (":path", path)],
            end_stream=True,
        ),
    )


async def test_a_worker_reaches_a_primary_site_and_streams_flow_both_ways(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with east_with_a_worker() as sites:
        worker, west = sites.worker, sites.west
        assert sites.network.server_names == [None, WORKER_SNI]  # sup's dial, then the worker's
        assert rows(worker, "west") == [("worker", True)]
        assert rows(west, "east") == [("primary", False), ("worker", False)]
        assert worker.status()["west"]["up"] is True
        # The worker's imports come from outside (the supervisor's): its view follows them.
        assert "west" not in worker.routes.latest.sites_for(API)
        worker.imports.publish(sites.sup.imports.latest)
        await until(worker.routes, lambda v: v.sites_for(API) == ("west",))
        # worker -> west on its own link
        outbound = worker.outbound("west")
        assert outbound is not None
        with trio.fail_after(HANG_GUARD):
            stream = await open_on(outbound)
            assert dict(await stream.response_headers())[b":status"] == b"200"
        assert sites.served == ["east"]
        # west -> the worker on the same link's reverse connection
        (extra,) = west_state(sites).extras
        assert extra.pinned
        with trio.fail_after(HANG_GUARD):
            stream = await open_on(extra.client)
            assert dict(await stream.response_headers())[b":status"] == b"200"
        assert sites.worker_served == ["west"]


async def test_no_federation_stream_ever_runs_on_a_worker_link(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="isthmus.peering")
    async with east_with_a_worker() as sites:
        state = west_state(sites)
        for _ in range(50):  # several export/ack rounds (virtual seconds)
            await trio.sleep(0.1)
            assert state.exporting is not None and not state.exporting.pinned
        # The worker never exported (its own service never reached west) nor imported
        # (nothing published its import table), and nobody's export was refused.
        solo = ServiceName("solo", "default")
        assert solo not in {e.service.service for e in sites.west.imports.latest.entries()}
        assert sites.west.routes.latest.sites_for(SOLO) == ()
        assert len(sites.worker.imports.latest.peers) == 0
        assert sites.worker.status()["west"]["export_version"] is None
        assert not [r for r in caplog.records if "refused" in r.getMessage()]
        assert sites.west.status()["east"]["export_version"] is not None
        assert not sites.sup.imports.latest.peers["west"].stale


async def test_federation_and_control_streams_on_a_worker_link_are_refused_not_the_link(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with east_with_a_worker() as sites:
        worker_conn = sites.worker.outbound("west")
        (extra,) = west_state(sites).extras
        assert isinstance(worker_conn, H2Connection)
        # worker -> west (west refuses), then west -> the worker (the worker refuses)
        for conn in (worker_conn, extra.client):
            for path in (FEDERATION_PATH_V2, CONTROL_PATH):
                with trio.fail_after(HANG_GUARD):
                    stream = await open_on(conn, path)
                    with pytest.raises(StreamReset) as caught:
                        await stream.response_headers()
                assert caught.value.error_code == H2_REFUSED_STREAM
        assert sites.control_calls == []
        # The link stays up and carries traffic.
        await trio.sleep(5.0)
        assert not worker_conn.is_closing and not extra.client.is_closing
        assert sites.worker.outbound("west") is worker_conn
        with trio.fail_after(HANG_GUARD):
            stream = await open_on(worker_conn)
            assert dict(await stream.response_headers())[b":status"] == b"200"
        # The control path itself works on the primary link (the supervisor's).
        sup_conn = sites.sup.outbound("west")
        assert sup_conn is not None
        with trio.fail_after(HANG_GUARD):
            stream = await open_on(sup_conn, CONTROL_PATH)
            assert dict(await stream.response_headers())[b":status"] == b"204"
        assert sites.control_calls == ["east"]


async def test_losing_the_primary_link_never_promotes_the_worker_link(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with east_with_a_worker() as sites:
        state = west_state(sites)
        (pinned,) = state.extras
        primary = state.accepted
        assert primary is not None and not primary.pinned
        sites.network.reachable = False  # the supervisor cannot redial for now
        sites.network.wires[0].cut = True  # the primary link goes silent: its PINGs expire
        with trio.fail_after(HANG_GUARD):
            while state.accepted is not None:  # noqa: ASYNC110 -- a status, not an event
                await trio.sleep(0.1)
        # Only the worker link is left: still an extra one, the export not moved onto it,
        # and the peer's imports stale (their export cannot resume there).
        for _ in range(30):
            await trio.sleep(0.1)
            assert state.accepted is None and state.extras == [pinned]
            assert state.exporting is None
            assert rows(sites.west, "east") == [("worker", False)]
        assert sites.west.imports.latest.peers["east"].stale
        assert sites.west.status()["east"]["up"] is True  # streams may still go on it
        # ... but no control stream (the fleet push): the worker would refuse it.
        assert sites.west.replica_outbound("east", "east.test:1") is None
        # The supervisor redials: the new primary takes the slot and the export resumes.
        sites.network.reachable = True
        with trio.fail_after(HANG_GUARD):
            while state.accepted is None or state.exporting is not state.accepted:  # noqa: ASYNC110
                await trio.sleep(0.1)
        assert state.accepted is not primary and not state.accepted.pinned
        assert state.extras == [pinned]
        await until(sites.west.imports, lambda t: not t.peers["east"].stale)
        await until(sites.sup.imports, lambda t: not t.peers["west"].stale)
        assert rows(sites.west, "east") == [("primary", False), ("worker", False)]
        assert sites.west.replica_outbound("east", "east.test:1") is state.accepted_client


async def test_a_workers_pool_links_are_worker_links_and_its_own_is_kept(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with east_with_a_worker(worker_max_links=3, slots=SLOTS) as sites:
        worker_conn = sites.worker.outbound("west")
        assert worker_conn is not None
        pool = sites.worker._pools["west"]
        held: list[H2Stream] = []

        async def hold_one() -> None:
            stream = await pool.open_stream(
                [(":method", "CONNECT"), (":authority", "api.default:80")]
            )
            assert dict(await stream.response_headers())[b":status"] == b"200"
            held.append(stream)

        with trio.fail_after(HANG_GUARD):
            async with trio.open_nursery() as nursery:
                for _ in range(2 * SLOTS):
                    nursery.start_soon(hold_one)
        assert len(held) == 2 * SLOTS
        worker_rows = rows(sites.worker, "west")
        assert len(worker_rows) >= 2 and set(worker_rows) == {("worker", True)}, worker_rows
        assert rows(sites.west, "east")[0] == ("primary", False)
        assert set(rows(sites.west, "east")[1:]) == {("worker", False)}
        assert all(x.pinned for x in west_state(sites).extras)
        for stream in held:
            await stream.aclose()
        # Idle pool links are drained; the dial loop's own link stays (the pool's first).
        with trio.fail_after(HANG_GUARD + 3 * 60.0):
            while len(rows(sites.worker, "west")) != 1:  # noqa: ASYNC110 -- a status
                await trio.sleep(1.0)
        await trio.sleep(3 * 60.0)
        assert rows(sites.worker, "west") == [("worker", True)]
        assert sites.worker.outbound("west") is worker_conn
        assert sites.network.server_names.count(None) == 1  # only the supervisor's dial


async def test_a_worker_link_belongs_to_the_replica_it_comes_from(
    autojump_clock: trio.abc.Clock,
) -> None:
    """West lists east by two replicas that share a SPIFFE ID; only east1 runs (a supervisor
    and a worker, both dialing from east1's address).  The worker link takes no slot, so it
    must stay with east1 -- not fill east2's free one and make the absent east2 look up."""
    ident = identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED))
    hosts = ("east1.test", "east2.test")
    async with trio.open_nursery() as nursery:
        network = MemoryNetwork(nursery)
        west = Peering(
            local_site="west",
            identity=ident,
            peers=[PeerSpec("east", h, 1, EAST_ID, dial=False, replica=f"{h}:1") for h in hosts],
            catalog=Watch(catalog_with_api()),
            export_rules=[ExportConfig()],
            settings=SETTINGS,
        )
        network.add("west.test", west, WEST_ID)
        common: dict[str, Any] = {
            "local_site": "east",
            "identity": ident,
            "peers": [PeerSpec("west", "west.test", 1, WEST_ID)],
            "catalog": Watch(Catalog()),
            "export_rules": [ExportConfig()],
            "settings": SETTINGS,
            "rng": lambda: 0.5,
            "dial": cast(Any, network.dialer(EAST_ID, source="east1.test:40000")),
        }
        sup = Peering(**common)
        worker = Peering(**common, mode="worker", server_name=WORKER_SNI)
        nursery.start_soon(sup.run)
        await until(sup.routes, lambda v: "west" in v.sites_for(API))
        nursery.start_soon(worker.run)
        with trio.fail_after(HANG_GUARD):
            while worker.status()["west"]["up"] is not True:  # noqa: ASYNC110 -- a status
                await trio.sleep(0.1)
        await trio.sleep(1.0)
        status = west.status()["east"]
        assert [(r["address"], r["up"]) for r in status["replicas"]] == [
            ("east1.test:1", True),
            ("east2.test:1", False),
        ]
        assert rows(west, "east") == [("primary", False), ("worker", False)]
        assert len(west._peers["east@east2.test:1"].extras) == 0
        assert west.replica_outbound("east", "east2.test:1") is None
        nursery.cancel_scope.cancel()


async def test_a_worker_accepts_a_peer_workers_link_and_keeps_every_link_pinned(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Worker to worker (both sites in worker mode): the accepting worker keeps the link as a
    worker link too, streams flow, and neither side federates."""
    ident = identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED))
    served: list[str] = []

    async def answer(site: str, stream: H2Stream) -> None:
        served.append(site)
        await stream.send_headers([(":status", "200")], end_stream=True)

    async with trio.open_nursery() as nursery:
        network = MemoryNetwork(nursery)
        east = Peering(
            local_site="east",
            identity=ident,
            peers=[PeerSpec("west", "west.test", 1, WEST_ID)],
            catalog=Watch(catalog_with_api()),
            export_rules=[ExportConfig()],
            settings=SETTINGS,
            rng=lambda: 0.5,
            dial=cast(Any, network.dialer(EAST_ID)),
            mode="worker",
            server_name=WORKER_SNI,
        )
        west = Peering(
            local_site="west",
            identity=ident,
            peers=[PeerSpec("east", "east.test", 1, EAST_ID, dial=False)],
            catalog=Watch(catalog_with_api()),
            export_rules=[ExportConfig()],
            settings=SETTINGS,
            stream_handler=answer,
            mode="worker",
            server_name=WORKER_SNI,
        )
        network.add("west.test", west, WEST_ID)
        nursery.start_soon(east.run)
        nursery.start_soon(west.run)
        with trio.fail_after(HANG_GUARD):
            while west.status()["east"]["up"] is not True:  # noqa: ASYNC110 -- a status
                await trio.sleep(0.1)
        await trio.sleep(5.0)
        assert rows(west, "east") == [("worker", False)]
        assert rows(east, "west") == [("worker", True)]
        assert len(west.imports.latest.peers) == 0 and len(east.imports.latest.peers) == 0
        assert west.status()["east"]["export_version"] is None
        conn = east.outbound("west")
        assert conn is not None
        with trio.fail_after(HANG_GUARD):
            stream = await open_on(conn)
            assert dict(await stream.response_headers())[b":status"] == b"200"
        assert served == ["east"]
        nursery.cancel_scope.cancel()


def test_a_worker_mode_peering_must_name_the_worker_sni() -> None:
    ident = identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED))
    with pytest.raises(ValueError, match="SNI"):
        Peering(
            local_site="east",
            identity=ident,
            peers=[],
            catalog=Watch(Catalog()),
            export_rules=[],
            mode="worker",
        )
