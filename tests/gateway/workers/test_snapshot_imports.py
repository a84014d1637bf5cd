"""Import tables through the snapshot feed: merged sites, staleness, routes, parts, deltas."""

from __future__ import annotations

import pickle

from discovery.model import ServiceName
from gateway.workers.messages import ImportsDelta, ImportsPart
from gateway.workers.snapshot import Change, SnapshotFeed, SnapshotReceiver
from overlay.federation.import_ import ImportTable, ImportUpdate
from overlay.federation.protocol import ExportedService
from overlay.peering.route_table import build_route_view

OFFSET = -250.0
R1, R2 = "b@127.0.0.1:7001", "b@127.0.0.1:7002"


def svc(i: int, healthy: int = 1, routes: tuple[str, ...] = ()) -> ExportedService:
    return ExportedService(ServiceName(f"s{i}", "default"), ("http1",), healthy, 2, 2, (), routes)


def full(site: str, epoch: str, n: int, start: int = 0) -> ImportUpdate:
    services = tuple(
        svc(i, routes=(f'{{"match":"/r{i}"}}',) if i % 7 == 0 else ())
        for i in range(start, start + n)
    )
    return ImportUpdate(site, epoch, 1, True, services)


def table() -> ImportTable:
    t = ImportTable(grace=30.0).apply(full("b", "e1", 300), now=5.0, replica=R1)
    t = t.apply(full("b", "e2", 300, start=100), now=6.0, replica=R2)  # two replicas, merged
    return t.apply(full("c", "e3", 50), now=7.0)


def same_imports(got: ImportTable, want: ImportTable) -> None:
    assert got.grace == want.grace
    assert set(got.peers) == set(want.peers)
    assert len(got.replicas) == 0  # the merged view only
    for site, peer in want.peers.items():
        mine = got.peers[site]
        assert (mine.site, mine.epoch, mine.version) == (peer.site, peer.epoch, peer.version)
        assert dict(mine.services.items()) == dict(peer.services.items())
        assert dict(mine.routes.items()) == dict(peer.routes.items())
        assert mine.confirmed_at == peer.confirmed_at + OFFSET
        assert mine.stale == peer.stale
        if peer.stale_since is not None:
            assert mine.stale_since == peer.stale_since + OFFSET
    for now in (8.0, 20.0):
        assert build_route_view("a", [], got, {}, now + OFFSET).routes == (
            build_route_view("a", [], want, {}, now).routes
        )


def test_the_merged_import_view_crosses_whole_then_by_site() -> None:
    t = table()
    feed = SnapshotFeed(imports=t)
    rx = SnapshotReceiver(clock_offset=OFFSET)
    for m in feed.messages_for(None):
        rx.apply(m)
    same_imports(rx.imports, t)
    before_c = rx.imports.peers["c"]

    # A health delta on one replica of b: one site patch with the changed services only.
    delta = ImportUpdate("b", "e1", 2, False, (svc(3, healthy=0), svc(4, healthy=0)), ())
    t2 = t.apply(delta, now=9.0, replica=R1)
    feed.publish_imports(t2, now=9.0)
    msgs = feed.messages_for(rx.version)
    assert [type(m) for m in msgs] == [ImportsDelta]
    d = msgs[0]
    assert isinstance(d, ImportsDelta)
    assert [p.header.site for p in d.sites] == ["b"]
    assert rx.apply(d) == Change(imports=True)
    same_imports(rx.imports, t2)
    assert rx.imports.peers["c"] is before_c  # an untouched site keeps its object

    # c's link goes down (stale), b loses a replica's copy, then c expires.
    t3 = t2.link_down("c", now=10.0).withdraw("b", replica=R2)
    feed.publish_imports(t3, now=10.0)
    for m in feed.messages_for(rx.version):
        rx.apply(m)
    same_imports(rx.imports, t3)
    assert rx.imports.peers["c"].stale and not rx.imports.is_usable("c")
    feed.publish_imports(t3, now=41.0)  # past c's grace: the feed drops it
    msgs = feed.messages_for(rx.version)
    assert [type(m) for m in msgs] == [ImportsDelta]
    assert isinstance(msgs[0], ImportsDelta) and msgs[0].removed == ("c",)
    rx.apply(msgs[0])
    assert set(rx.imports.peers) == {"b"}


def test_a_big_import_table_comes_in_bounded_parts() -> None:
    t = ImportTable(grace=30.0).apply(full("b", "e1", 5000), now=1.0)
    budget = 32 << 10
    feed = SnapshotFeed(imports=t, budget=budget)
    parts = [m for m in feed.messages_for(None) if isinstance(m, ImportsPart)]
    assert len(parts) > 5 and parts[-1].final and not any(p.final for p in parts[:-1])
    assert max(len(pickle.dumps(p)) for p in parts) <= 2 * budget
    rx = SnapshotReceiver(clock_offset=OFFSET)
    for p in parts[:-1]:
        assert rx.apply(p) == Change()
    assert rx.apply(parts[-1]) == Change(imports=True)
    same_imports(rx.imports, t)


def test_a_peer_arriving_whole_comes_as_a_delta_in_bounded_messages() -> None:
    """A peer's snapshot reaches a worker that keeps up as a delta: a new site with all its
    services (and later a big change of them) in messages of about ``budget`` bytes, each one
    step of the worker's loop, published whole at the last (routes ride with it)."""
    budget = 8 << 10
    t = table()
    feed = SnapshotFeed(imports=t, budget=budget)
    rx = SnapshotReceiver(clock_offset=OFFSET)
    for m in feed.messages_for(None):
        rx.apply(m)
    arrived = t.apply(full("d", "e4", 600), now=8.0)  # a new site: its whole table
    changed = arrived.apply(
        ImportUpdate("d", "e4", 2, False, tuple(svc(i, healthy=0) for i in range(0, 600, 3))),
        now=9.0,
    )  # a third of its services change: a diff, not the whole site
    for step in (arrived, changed):
        held, version = rx.imports, rx.version
        feed.publish_imports(step, now=9.0)
        msgs = feed.messages_for(rx.version)
        deltas = [m for m in msgs if isinstance(m, ImportsDelta)]
        assert len(deltas) == len(msgs) > 2
        assert [m.index for m in deltas] == list(range(len(msgs)))
        assert [m.final for m in deltas] == [False] * (len(msgs) - 1) + [True]
        assert max(len(pickle.dumps(m)) for m in msgs) <= 2 * budget
        assert all(p.header.site == "d" for m in deltas for p in m.sites)
        for m in msgs[:-1]:
            assert rx.apply(m) == Change()
            assert rx.imports is held and rx.version == version  # nothing before the last
        assert rx.apply(msgs[-1]) == Change(imports=True)
        same_imports(rx.imports, step)
    assert dict(rx.imports.peers["d"].routes.items()) == dict(changed.peers["d"].routes.items())
    assert len(rx.imports.peers["d"].routes) > 0
