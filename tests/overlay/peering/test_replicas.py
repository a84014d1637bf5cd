"""The replica decisions: spreading, site liveness, which replica an accepted link fills."""

from __future__ import annotations

from collections import Counter

from overlay.peering.replicas import (
    ReplicaLoad,
    accept_replica,
    down_sites,
    is_suspect,
    pick_replica,
)


def test_least_loaded_replica_takes_the_stream() -> None:
    loads = [ReplicaLoad(50, 100), ReplicaLoad(10, 100), ReplicaLoad(30, 100)]
    assert all(pick_replica(loads, turn) == 1 for turn in range(6))
    # A share, not a count: 10 of 20 slots is fuller than 20 of 100.
    assert pick_replica([ReplicaLoad(10, 20), ReplicaLoad(20, 100)], 0) == 1


def test_ties_rotate_so_idle_replicas_share_the_requests() -> None:
    loads = [ReplicaLoad(0, 100)] * 3
    picks = Counter(pick_replica(loads, turn) for turn in range(30))
    assert picks == Counter({0: 10, 1: 10, 2: 10})
    # A stream or two a connection holds for itself (export, reverse connection) is no load.
    uneven = [ReplicaLoad(2, 100), ReplicaLoad(1, 100)]
    assert Counter(pick_replica(uneven, turn) for turn in range(10)) == Counter({0: 5, 1: 5})


def test_a_suspect_replica_is_tried_last() -> None:
    loads = [ReplicaLoad(0, 100, suspect=True), ReplicaLoad(90, 100)]
    assert all(pick_replica(loads, turn) == 1 for turn in range(4))
    assert pick_replica([ReplicaLoad(0, 100, suspect=True)], 0) == 0
    assert is_suspect(10.0, now=11.0, window=1.5) and not is_suspect(10.0, now=11.5, window=1.5)
    assert not is_suspect(None, now=11.0, window=1.5)


def test_a_full_replica_is_picked_last_and_none_without_replicas() -> None:
    assert pick_replica([ReplicaLoad(100, 100), ReplicaLoad(99, 100)], 0) == 1
    assert pick_replica([ReplicaLoad(100, 100)], 3) == 0  # waits for a slot there
    assert pick_replica([], 0) is None


def test_a_site_is_down_only_when_every_replica_is() -> None:
    pairs = [("b", False), ("b", True), ("c", False), ("c", False), ("d", True)]
    assert down_sites(pairs) == frozenset({"c"})
    assert down_sites([("b", False)]) == frozenset({"b"})
    assert down_sites([]) == frozenset()


def test_an_accepted_link_fills_a_free_slot_of_its_host_first() -> None:
    replicas = [("10.0.0.1", False), ("10.0.0.2", False)]
    assert accept_replica(replicas, "10.0.0.2") == 1
    assert accept_replica([("10.0.0.1", False), ("10.0.0.2", True)], "10.0.0.2") == 0
    # Same host (loopback): the first free slot.
    assert accept_replica([("127.0.0.1", True), ("127.0.0.1", False)], "127.0.0.1") == 1
    # Every slot taken (a replica's new link before its old one is retired): its host's.
    assert accept_replica([("10.0.0.1", True), ("10.0.0.2", True)], "10.0.0.2") == 1
    assert accept_replica([("10.0.0.1", True)], "10.9.9.9") == 0
    assert accept_replica([], "10.0.0.1") is None
