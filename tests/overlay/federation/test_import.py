"""The import table: freshness, stale grace then withdrawal, resync without duplicates."""

from __future__ import annotations

from discovery.model import ServiceName
from overlay.federation.import_ import ImportSession, ImportTable, ImportUpdate
from overlay.federation.protocol import Delta, Snapshot

from .strategies import svc

A = ServiceName("a", "default")
B = ServiceName("b", "default")


def full(site: str, epoch: str, version: int, *services: object) -> ImportUpdate:
    return ImportUpdate(site, epoch, version, True, tuple(services))  # type: ignore[arg-type]


def test_entries_carry_origin_version_and_freshness() -> None:
    table = ImportTable(grace=30.0).apply(full("east", "e1", 1, svc("a")), now=10.0)
    peer = table.peers["east"]
    assert (peer.site, peer.epoch, peer.version, peer.confirmed_at, peer.stale) == (
        "east",
        "e1",
        1,
        10.0,
        False,
    )
    (entry,) = table.entries()
    assert (entry.origin_site, entry.version, entry.service) == ("east", 1, svc("a"))
    table = table.apply(ImportUpdate("east", "e1", 2, False, (svc("b"),), ()), now=11.0)
    assert {e.service.service: e.version for e in table.entries()} == {A: 1, B: 2}
    assert table.confirm("east", 15.0).peers["east"].confirmed_at == 15.0


def test_stale_for_grace_then_withdrawn() -> None:
    table = ImportTable(grace=30.0).apply(full("east", "e1", 1, svc("a")), now=0.0)
    table = table.link_down("east", now=100.0)
    assert table.peers["east"].stale and table.peers["east"].stale_since == 100.0
    assert table.link_down("east", now=120.0).peers["east"].stale_since == 100.0  # idempotent
    assert (
        table.confirm("east", 110.0).peers["east"].confirmed_at == 0.0
    )  # a dead link vouches for nothing
    assert table.next_expiry() == 130.0
    assert "east" in table.expire(129.9).peers
    assert list(table.expire(129.9).entries())  # still listed, stale
    gone = table.expire(130.0)
    assert "east" not in gone.peers and not list(gone.entries())
    assert gone.next_expiry() is None


def test_resync_restores_without_duplicates_and_drops_what_went_away() -> None:
    table = ImportTable(grace=30.0).apply(full("east", "e1", 1, svc("a"), svc("b")), now=0.0)
    table = table.link_down("east", now=5.0)
    # A new link, a new session: the snapshot now lacks "b" and changes "a".
    session = ImportSession("east")
    result = session.receive(Snapshot("east", "e2", 1, (svc("a", capacity=9),)))
    assert result.update is not None
    table = table.apply(result.update, now=6.0)
    peer = table.peers["east"]
    assert not peer.stale and peer.confirmed_at == 6.0
    assert [e.service for e in table.entries()] == [svc("a", capacity=9)]
    assert table.expire(1000.0) == table  # fresh entries never expire


def test_unchanged_entries_keep_their_version_across_a_same_epoch_snapshot() -> None:
    table = ImportTable(grace=1.0).apply(full("east", "e1", 1, svc("a"), svc("b")), now=0.0)
    table = table.apply(full("east", "e1", 7, svc("a"), svc("b", capacity=5)), now=1.0)
    assert {e.service.service: e.version for e in table.entries()} == {A: 1, B: 7}


def test_session_updates_drive_the_table() -> None:
    session = ImportSession("east")
    table = ImportTable(grace=1.0)
    for now, msg in enumerate(
        [
            Snapshot("east", "e1", 1, (svc("a"), svc("b"))),
            Delta("east", "e1", 1, 2, (svc("a", capacity=4),), (B,)),
        ]
    ):
        update = session.receive(msg).update
        assert update is not None
        table = table.apply(update, float(now))
    assert {e.service.service: e.service.capacity for e in table.entries()} == {A: 4}
    assert table.peers["east"].version == 2


def test_sites_are_independent() -> None:
    table = ImportTable(grace=10.0)
    table = table.apply(full("east", "e1", 1, svc("a")), now=0.0)
    table = table.apply(full("west", "w1", 1, svc("a")), now=0.0)
    table = table.link_down("east", now=1.0).expire(11.0)
    assert set(table.peers) == {"west"}
    assert len(table.withdraw("west").peers) == 0
