"""One site's imports merged from its replicas' copies: no flap when one replica goes."""

from __future__ import annotations

from dataclasses import replace

from discovery.model import ServiceName
from overlay.federation.import_ import ImportTable, ImportUpdate
from overlay.federation.import_merge import merge_site
from overlay.peering.route_table import build_route_view

from .strategies import svc

API = ServiceName("api", "default")
DB = ServiceName("db", "default")
R1, R2 = "b@127.0.0.1:7001", "b@127.0.0.1:7002"


def full(epoch: str, version: int, *services: object) -> ImportUpdate:
    return ImportUpdate("b", epoch, version, True, tuple(services))  # type: ignore[arg-type]


def two_replicas() -> ImportTable:
    table = ImportTable(grace=30.0).apply(full("e1", 3, svc("api")), now=1.0, replica=R1)
    return table.apply(full("e2", 7, svc("api")), now=2.0, replica=R2)


def routes(table: ImportTable, now: float) -> tuple[str, ...]:
    return build_route_view("a", [], table, {}, now).routes.get(API, ())


def test_one_copy_is_the_site_itself() -> None:
    table = ImportTable(grace=30.0).apply(full("e1", 1, svc("api")), now=1.0)
    assert table.peers["b"] is table.replicas["b"]
    assert merge_site([]) is None


def test_the_site_is_one_merged_entry_of_the_newest_copy() -> None:
    table = two_replicas()
    assert set(table.replicas) == {R1, R2}
    assert list(table.peers) == ["b"]
    peer = table.peers["b"]
    assert (peer.epoch, peer.version, peer.confirmed_at, peer.stale) == ("e2", 7, 2.0, False)
    assert routes(table, 3.0) == ("b",)  # one site, not one entry per replica


def test_one_replica_down_keeps_the_site_fresh_and_routed() -> None:
    table = two_replicas()
    before = build_route_view("a", [], table, {}, 3.0)
    down = table.link_down("b", now=3.0, replica=R1)
    assert down.replicas[R1].stale and not down.peers["b"].stale
    assert build_route_view("a", [], down, {}, 4.0) == before
    # ... and past the grace the dead copy goes, the site stays.
    gone = down.expire(40.0)
    assert set(gone.replicas) == {R2} and "b" in gone.peers and routes(gone, 40.0) == ("b",)
    # The replica restarts: a new epoch; the site stays routed throughout.
    back = gone.apply(full("e3", 1, svc("api")), now=41.0, replica=R1)
    assert routes(back, 41.0) == ("b",) and back.peers["b"].epoch == "e3"


def test_stale_only_when_every_copy_is_and_grace_from_the_last() -> None:
    table = two_replicas().link_down("b", now=3.0, replica=R1)
    table = table.link_down("b", now=10.0, replica=R2)
    assert table.peers["b"].stale and table.peers["b"].stale_since == 10.0
    assert routes(table, 11.0) == ()
    assert table.next_expiry() == 33.0  # R1's copy first
    partly = table.expire(33.0)
    assert "b" in partly.peers and partly.peers["b"].stale_since == 10.0
    assert "b" not in partly.expire(40.0).peers


def test_union_of_fresh_copies_newest_wins_a_conflict_stale_adds_nothing() -> None:
    table = ImportTable(grace=30.0).apply(
        full("e1", 1, svc("api", healthy=1), svc("db")), now=1.0, replica=R1
    )
    table = table.apply(full("e2", 1, svc("api", healthy=5)), now=2.0, replica=R2)
    peer = table.peers["b"]
    assert set(peer.services) == {API, DB}
    assert peer.services[API].service.healthy_count == 5  # R2's copy is the newer one
    # R1 goes: its "db" (which R2 does not export) goes with it; "api" stays.
    down = table.link_down("b", now=3.0, replica=R1)
    assert set(down.peers["b"].services) == {API}


def test_withdraw_one_replica_or_the_whole_site() -> None:
    table = two_replicas()
    one = table.withdraw("b", replica=R1)
    assert set(one.replicas) == {R2} and "b" in one.peers
    assert one.withdraw("b", replica=R1) is one
    whole = table.withdraw("b")
    assert not whole.replicas and "b" not in whole.peers


def test_route_texts_merge_and_keep_their_identity_while_unchanged() -> None:
    api = replace(svc("api"), routes=('{"name": "canary"}',))
    table = ImportTable(grace=30.0).apply(full("e1", 1, api), now=1.0, replica=R1)
    table = table.apply(full("e2", 1, api), now=2.0, replica=R2)
    routes = table.peers["b"].routes
    assert dict(routes) == {API: ('{"name": "canary"}',)}
    # A health change on one replica: the merged routes are the same object.
    table = table.apply(
        ImportUpdate("b", "e1", 2, False, (replace(api, healthy_count=0),)), now=3.0, replica=R1
    )
    assert table.peers["b"].routes is routes
    # One replica gone: the other's routes stay.
    down = table.link_down("b", now=4.0, replica=R2)
    assert dict(down.peers["b"].routes) == {API: ('{"name": "canary"}',)}
