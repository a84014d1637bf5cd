"""The snapshot feed and receiver (pure): full, delta, chains, gaps, parts, clock offset."""

from __future__ import annotations

import pickle
from collections.abc import Sequence

import immutables
import pytest
from hypothesis import given
from hypothesis import strategies as st

from discovery.catalog import apply, apply_many, routable
from discovery.events import Added, Event, Removed, Resynced, SourceStale, Updated
from discovery.map_diff import _map_diff_lookups, map_diff
from discovery.merge import Policy
from discovery.model import Endpoint, EndpointKey, ServiceName
from discovery.snapshot import Catalog
from discovery.steps import complete
from gateway.workers.messages import CatalogDelta, CatalogPart, Failing, FailingDelta
from gateway.workers.snapshot import (
    Change,
    NeedResync,
    SnapshotFeed,
    SnapshotReceiver,
    SnapshotVersion,
)
from gateway.workers.snapshot_receiver import holds
from overlay.peering.route_fold import RouteFold

POLICY = Policy(order=("static", "consul", "mdns"))
SERVICES = [ServiceName(f"svc{i}", "t") for i in range(20)]
OFFSET = 1000.0


def endpoint(i: int, weight: int = 1) -> Endpoint:
    return Endpoint(
        SERVICES[i % len(SERVICES)],
        f"10.0.{(i >> 8) & 255}.{i & 255}",
        1 + i,
        weight=weight,
        metadata=(("version", "v1"),),
    )


def build(n: int) -> Catalog:
    catalog, _ = apply(
        Catalog(),
        Resynced("consul", tuple(endpoint(i) for i in range(n)), "1", 0.0),
        now=0.0,
        policy=POLICY,
    )
    overlap = tuple(endpoint(i) for i in range(0, n, 10))
    catalog, _ = apply(catalog, Resynced("mdns", overlap, "1", 0.0), now=0.0, policy=POLICY)
    return catalog


def churn(catalog: Catalog, ids: Sequence[int], version: str) -> Catalog:
    events: list[Event] = [Updated("consul", endpoint(i, weight=7), version, 1.0) for i in ids[::3]]
    events += [Removed("consul", endpoint(i).key, version, 1.0) for i in ids[1::3]]
    events += [Added("consul", endpoint(10_000 + i), version, 1.0) for i in ids[2::3]]
    new, _ = apply_many(catalog, events, now=1.0, policy=POLICY)
    return new


def same_catalog(got: Catalog, want: Catalog, offset: float = OFFSET) -> None:
    """What the data plane reads is equal (times shifted by ``offset``); views are not sent."""
    assert (got.version, got.size, len(got)) == (want.version, want.size, len(want))
    assert dict(got.services.items()) == dict(want.services.items())
    assert dict(got.ejected.items()) == dict(want.ejected.items())
    for name, state in want.sources.items():
        mine = got.sources[name]
        assert (mine.name, mine.version, mine.expired, mine.reason) == (
            state.name,
            state.version,
            state.expired,
            state.reason,
        )
        assert mine.confirmed_at == state.confirmed_at + offset
        for a, b in ((mine.stale_since, state.stale_since), (mine.grace_until, state.grace_until)):
            assert (a is None and b is None) or (
                a is not None and b is not None and a == b + offset
            )
    assert len(got.views) == 0
    for service in want.services:
        for now in (0.5, 29.0, 31.0):
            assert routable(got, service, now + offset) == routable(want, service, now)


def deliver(receiver: SnapshotReceiver, messages: list[object]) -> list[Change | NeedResync]:
    return [receiver.apply(m) for m in messages]


def test_a_new_worker_gets_the_full_catalog_then_deltas() -> None:
    catalog = build(2000)
    feed = SnapshotFeed(catalog=catalog)
    rx = SnapshotReceiver(clock_offset=OFFSET)
    first = feed.messages_for(None)
    assert isinstance(first[0], CatalogPart)
    results = deliver(rx, first)
    assert Change(catalog=True) in results and not any(isinstance(r, NeedResync) for r in results)
    same_catalog(rx.catalog, catalog)
    assert rx.version == feed.version
    assert feed.messages_for(rx.version) == []

    newer = churn(catalog, range(1, 1200, 20), "2")  # 60 changes, all in svc1 (100 endpoints)
    feed.publish_catalog(newer)
    step = feed.messages_for(rx.version)
    assert [type(m) for m in step] == [CatalogDelta]
    delta = step[0]
    assert isinstance(delta, CatalogDelta)
    # Endpoint-level patches: far fewer entries than the changed services hold.
    assert [(p.replace, len(p.upserts), len(p.removals)) for p in delta.services] == [
        (False, 40, 20)
    ]
    before = rx.catalog
    assert deliver(rx, step) == [Change(catalog=True)]
    same_catalog(rx.catalog, newer)
    # Unchanged services keep their map objects (the route fold diffs by identity).
    untouched = [s for s in newer.services if newer.services[s] is catalog.services.get(s)]
    assert untouched
    assert all(rx.catalog.services[s] is before.services[s] for s in untouched)


def test_a_worker_holds_a_version_once_it_applied_every_part_up_to_it() -> None:
    """What a reload's answer waits for in each worker (``Apply.snapshot``)."""
    feed = SnapshotFeed(catalog=build(50))
    rx = SnapshotReceiver(clock_offset=OFFSET)
    assert not holds(rx.version, feed.version)  # nothing yet
    deliver(rx, feed.messages_for(None))
    assert holds(rx.version, feed.version)
    feed.publish_catalog(churn(feed.catalog.value, [3], "2"))  # the reload's new catalog
    target = feed.version
    assert not holds(rx.version, target)
    feed.publish_failing(immutables.Map({endpoint(1).key: "down"}))  # a later change too
    deliver(rx, feed.messages_for(rx.version))
    assert holds(rx.version, target) and holds(rx.version, feed.version)
    other = SnapshotVersion("another-feed", target.catalog, target.imports, target.failing)
    assert not holds(rx.version, other)


def test_a_delta_is_computed_once_for_every_worker_and_bursts_coalesce() -> None:
    catalog = build(500)
    feed = SnapshotFeed(catalog=catalog)
    workers = [SnapshotReceiver(clock_offset=OFFSET) for _ in range(3)]
    for rx in workers:
        deliver(rx, feed.messages_for(None))
    assert feed.catalog.fulls_built == 1
    # Three publishes before anyone asks: one step, one diff.
    c = catalog
    for v in ("2", "3", "4"):
        c = churn(c, range(int(v) * 10, int(v) * 10 + 9), v)
        feed.publish_catalog(c)
    sent = [feed.messages_for(rx.version) for rx in workers]
    assert feed.catalog.deltas_built == 1
    assert all(len(s) == 1 and s[0] is sent[0][0] for s in sent)
    for rx, msgs in zip(workers, sent, strict=True):
        deliver(rx, msgs)
        same_catalog(rx.catalog, c)
    feed.publish_catalog(c)  # the same object: no new version
    assert feed.messages_for(workers[0].version) == []


def test_a_worker_steps_behind_gets_the_chain_and_one_past_the_history_a_full() -> None:
    catalog = build(500)
    feed = SnapshotFeed(catalog=catalog, history=3)
    slow, fast = SnapshotReceiver(clock_offset=OFFSET), SnapshotReceiver(clock_offset=OFFSET)
    deliver(slow, feed.messages_for(None))
    deliver(fast, feed.messages_for(None))
    c = catalog
    for step in range(2):
        c = churn(c, range(step * 9, step * 9 + 9), str(step + 2))
        feed.publish_catalog(c)
        deliver(fast, feed.messages_for(fast.version))
    chain = feed.messages_for(slow.version)
    assert [type(m) for m in chain] == [CatalogDelta, CatalogDelta]
    deliver(slow, chain)
    same_catalog(slow.catalog, c)
    # Five more steps: the slow one (not asking) falls out of the 3-step history.
    old = slow.version
    for step in range(2, 7):
        c = churn(c, range(step * 9, step * 9 + 9), str(step + 2))
        feed.publish_catalog(c)
        deliver(fast, feed.messages_for(fast.version))
    again = feed.messages_for(old)
    assert all(isinstance(m, CatalogPart) for m in again)
    deliver(slow, again)
    same_catalog(slow.catalog, c)
    same_catalog(fast.catalog, c)


def test_a_gap_asks_for_a_resync_once_then_a_full_heals_it() -> None:
    catalog = build(300)
    feed = SnapshotFeed(catalog=catalog)
    rx = SnapshotReceiver(clock_offset=OFFSET)
    deliver(rx, feed.messages_for(None))
    held = rx.version
    c2 = churn(catalog, range(9), "2")
    feed.publish_catalog(c2)
    lost = feed.messages_for(held)  # never delivered: a gap
    assert len(lost) == 1
    c3 = churn(c2, range(9, 18), "3")
    feed.publish_catalog(c3)
    nxt = feed.messages_for(SnapshotVersion(held.epoch, 1, held.imports, held.failing))
    assert [type(m) for m in nxt] == [CatalogDelta]
    first = rx.apply(nxt[0])
    assert isinstance(first, NeedResync) and "delta from 1, holding 0" in first.reason
    assert rx.apply(nxt[0]) == Change()  # asked once; ignored until the full arrives
    same_catalog(rx.catalog, catalog)  # nothing applied partially
    results = deliver(rx, feed.messages_for(None))
    assert Change(catalog=True) in results
    same_catalog(rx.catalog, c3)
    # Another epoch (a restarted supervisor's feed) is a gap too.
    other = SnapshotFeed(catalog=c3, epoch="other")
    other.publish_catalog(churn(c3, range(30, 39), "4"))
    # A worker synced to "other" at seq 0 would take this delta; ours holds another epoch.
    delta = other.messages_for(SnapshotVersion("other", 0, 0, 0))[0]
    assert isinstance(rx.apply(delta), NeedResync)


def test_full_snapshots_come_in_bounded_parts_applied_at_the_final_one() -> None:
    catalog = build(20_000)
    budget = 64 << 10
    feed = SnapshotFeed(catalog=catalog, budget=budget)
    parts = [m for m in feed.messages_for(None) if isinstance(m, CatalogPart)]
    assert len(parts) > 10
    sizes = [len(pickle.dumps(p, protocol=pickle.HIGHEST_PROTOCOL)) for p in parts]
    assert max(sizes) <= 2 * budget, sizes
    # A service bigger than a part spans several (1000 endpoints each here).
    spans = [sum(1 for p in parts for s, _ in p.services if s == name) for name in SERVICES]
    assert max(spans) > 1
    rx = SnapshotReceiver(clock_offset=OFFSET)
    for part in parts[:-1]:
        assert rx.apply(part) == Change()
        assert len(rx.catalog) == 0  # nothing visible before the final part
    assert rx.apply(parts[-1]) == Change(catalog=True)
    same_catalog(rx.catalog, catalog)
    # A part out of order is a gap.
    rx2 = SnapshotReceiver(clock_offset=OFFSET)
    rx2.apply(parts[0])
    assert isinstance(rx2.apply(parts[2]), NeedResync)


def test_a_delta_over_the_budget_is_sent_as_a_full_snapshot() -> None:
    catalog = build(5000)
    feed = SnapshotFeed(catalog=catalog, budget=4 << 10)
    rx = SnapshotReceiver(clock_offset=OFFSET)
    deliver(rx, feed.messages_for(None))
    big = churn(catalog, range(0, 1500), "2")  # ~1500 changes, far over DELTA_PARTS * 4 KiB
    feed.publish_catalog(big)
    msgs = feed.messages_for(rx.version)
    assert msgs and all(isinstance(m, CatalogPart) for m in msgs)
    deliver(rx, msgs)
    same_catalog(rx.catalog, big)


def test_a_delta_heavier_than_a_part_comes_in_bounded_messages_published_at_the_last() -> None:
    """Why: the worker unpickles and applies each message in one step of its loop; a peer's
    10k services in one delta message stalled it 64 ms (bench_stall --workers 2)."""
    catalog = build(5000)  # 250 endpoints in each of 20 services
    budget = 4 << 10
    feed = SnapshotFeed(catalog=catalog, budget=budget)
    rx = SnapshotReceiver(clock_offset=OFFSET)
    deliver(rx, feed.messages_for(None))
    # 100 of svc0's endpoints change (a diff, not the whole service), and 60 elsewhere; then
    # all of svc0 is replaced (its patch is the whole service).
    diffed = churn(catalog, [*range(0, 2000, 20), *range(1, 61)], "2")
    replaced, _ = apply_many(
        diffed,
        [Updated("consul", endpoint(i, weight=9), "3", 1.0) for i in range(0, 5000, 20)],
        now=1.0,
        policy=POLICY,
    )
    for big in (diffed, replaced):
        held, version = rx.catalog, rx.version
        feed.publish_catalog(big)
        msgs = feed.messages_for(rx.version)
        deltas = [m for m in msgs if isinstance(m, CatalogDelta)]
        assert len(deltas) == len(msgs) > 2
        assert [m.index for m in deltas] == list(range(len(msgs)))
        assert [m.final for m in deltas] == [False] * (len(msgs) - 1) + [True]
        sizes = [len(pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL)) for m in msgs]
        assert max(sizes) <= 2 * budget, sizes
        # svc0's patch is bigger than a part: it spans messages.
        assert sum(1 for m in deltas for p in m.services if p.service == SERVICES[0]) > 1
        for message in msgs[:-1]:
            assert rx.apply(message) == Change()
            assert rx.catalog is held and rx.version == version  # nothing before the last
        assert rx.apply(msgs[-1]) == Change(catalog=True)
        same_catalog(rx.catalog, big)
    # The next delta is built from there: the worker is in step.
    small = churn(big, range(3000, 3003), "small")
    feed.publish_catalog(small)
    step = feed.messages_for(rx.version)
    assert [type(m) for m in step] == [CatalogDelta]
    deliver(rx, step)
    same_catalog(rx.catalog, small)


def test_a_delta_message_out_of_order_is_a_gap_and_nothing_half_applied_shows() -> None:
    catalog = build(5000)
    feed = SnapshotFeed(catalog=catalog, budget=4 << 10)
    rx = SnapshotReceiver(clock_offset=OFFSET)
    deliver(rx, feed.messages_for(None))
    held = rx.catalog
    big = churn(catalog, [*range(0, 2000, 20), *range(1, 61)], "2")
    feed.publish_catalog(big)
    msgs = feed.messages_for(rx.version)
    assert len(msgs) > 2 and all(isinstance(m, CatalogDelta) for m in msgs)
    assert rx.apply(msgs[0]) == Change()
    assert isinstance(rx.apply(msgs[2]), NeedResync)  # msgs[1] lost
    assert isinstance(rx.apply(msgs[0]), Change) and rx.catalog is held  # waiting: ignored
    assert rx.apply(msgs[-1]) == Change() and rx.catalog is held
    # The full snapshot that answers the resync replaces everything.
    deliver(rx, feed.messages_for(None))
    same_catalog(rx.catalog, big)
    # A delta that starts again from its first message drops the half it had.
    rx2 = SnapshotReceiver(clock_offset=OFFSET)
    deliver(rx2, SnapshotFeed(catalog=catalog, epoch=feed.epoch).messages_for(None))
    rx2.apply(msgs[0])
    rx2.apply(msgs[1])
    deliver(rx2, msgs)
    same_catalog(rx2.catalog, big)


def test_source_staleness_and_ejections_cross_with_shifted_times() -> None:
    catalog = build(400)
    feed = SnapshotFeed(catalog=catalog)
    rx = SnapshotReceiver(clock_offset=OFFSET)
    deliver(rx, feed.messages_for(None))
    stale, _ = apply(catalog, SourceStale("consul", "gone", 10.0), now=10.0, policy=POLICY)
    key = next(iter(stale.services[SERVICES[0]]))
    ejected = stale.with_ejected(immutables.Map({key: "5 consecutive failures"}))
    feed.publish_catalog(ejected)
    msgs = feed.messages_for(rx.version)
    assert [type(m) for m in msgs] == [CatalogDelta]
    deliver(rx, msgs)
    same_catalog(rx.catalog, ejected)
    assert rx.catalog.sources["consul"].stale_since == 10.0 + OFFSET
    assert rx.catalog.ejected[key] == "5 consecutive failures"


def test_the_route_fold_stays_incremental_on_the_worker() -> None:
    catalog = build(2000)
    feed = SnapshotFeed(catalog=catalog)
    rx = SnapshotReceiver(clock_offset=OFFSET)
    deliver(rx, feed.messages_for(None))
    fold, mine = RouteFold("a"), RouteFold("a")

    def run(f: RouteFold, c: Catalog, now: float) -> object:
        return complete(
            f.fold_steps(c, rx.imports, {}, now, down_peers=frozenset(), slice_items=64)
        )

    assert run(fold, catalog, 1.0) == run(mine, rx.catalog, 1.0 + OFFSET)
    newer = churn(catalog, range(3), "2")
    feed.publish_catalog(newer)
    deliver(rx, feed.messages_for(rx.version))
    assert run(fold, newer, 2.0) == run(mine, rx.catalog, 2.0 + OFFSET)
    assert mine.full_builds == 1 and mine.services_folded == fold.services_folded


def test_failing_marks_full_in_parts_and_deltas() -> None:
    marks = immutables.Map(
        {EndpointKey(SERVICES[0], "10.1.0.1", p): f"connect refused {p}" for p in range(2000)}
    )
    feed = SnapshotFeed(failing=marks, budget=16 << 10)
    rx = SnapshotReceiver(clock_offset=OFFSET)
    full = [m for m in feed.messages_for(None) if isinstance(m, Failing)]
    assert len(full) > 3 and full[-1].final and not full[0].final
    deliver(rx, feed.messages_for(None))
    assert dict(rx.failing.items()) == dict(marks.items())
    m = marks.mutate()
    del m[EndpointKey(SERVICES[0], "10.1.0.1", 0)]
    m[EndpointKey(SERVICES[1], "10.1.0.2", 1)] = "timeout"
    m[EndpointKey(SERVICES[0], "10.1.0.1", 5)] = "status 503"
    changed = m.finish()
    feed.publish_failing(changed)
    msgs = feed.messages_for(rx.version)
    assert len(msgs) == 1 and isinstance(msgs[0], FailingDelta)
    assert len(msgs[0].marked) == 2 and len(msgs[0].cleared) == 1
    assert rx.apply(msgs[0]) == Change(failing=True)
    assert dict(rx.failing.items()) == dict(changed.items())


def test_other_messages_are_refused_and_the_budget_is_checked() -> None:
    with pytest.raises(ValueError, match="not a snapshot message"):
        SnapshotReceiver(clock_offset=0.0).apply("hello")
    with pytest.raises(ValueError, match="budget"):
        SnapshotFeed(budget=10)


def test_frames_are_pickled_once_for_every_worker() -> None:
    catalog = build(1000)
    feed = SnapshotFeed(catalog=catalog, budget=8 << 10)
    first, second = feed.frames_for(None), feed.frames_for(None)
    assert len(first) > 2 and all(a is b for a, b in zip(first, second, strict=True))
    rx = SnapshotReceiver(clock_offset=OFFSET)
    deliver(rx, [pickle.loads(f) for f in first])
    feed.publish_catalog(newer := churn(catalog, range(9), "2"))
    d1, d2 = feed.frames_for(rx.version), feed.frames_for(rx.version)
    assert len(d1) == 1 and d1[0] is d2[0]
    deliver(rx, [pickle.loads(d1[0])])
    same_catalog(rx.catalog, newer)


class Colliding:
    """A key whose hash collides with every other's (the HAMT keeps them in one list)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def __hash__(self) -> int:
        return 7

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Colliding) and other.name == self.name


@given(
    st.lists(st.integers(0, 40), max_size=40),
    st.lists(st.tuples(st.sampled_from("aur"), st.integers(0, 50)), max_size=30),
    st.booleans(),
)
def test_map_diff_equals_the_look_up_diff(
    keys: list[int], edits: list[tuple[str, int]], collide: bool
) -> None:
    make = (
        (lambda i: Colliding(str(i))) if collide else (lambda i: EndpointKey(SERVICES[0], "h", i))
    )
    old = immutables.Map({make(i): object() for i in keys})
    m = old.mutate()
    for op, i in edits:
        key = make(i)
        if op == "r":
            m.pop(key, None)
        elif op == "u" and key in m:
            m[key] = object()
        elif op == "a":
            m[make(i)] = object()  # a new key object, equal to any old one
    new = m.finish()
    upserts, removals = map_diff(old, new)
    want_up, want_rm = _map_diff_lookups(old, new)
    assert dict(upserts) == dict(want_up) and len(upserts) == len(want_up)
    assert set(removals) == set(want_rm) and len(removals) == len(want_rm)
    rebuilt = old.mutate()
    for key in removals:
        del rebuilt[key]
    for key, value in upserts:
        rebuilt[key] = value
    assert dict(rebuilt.finish().items()) == dict(new.items())


def test_map_diff_falls_back_when_the_orders_differ() -> None:
    x, y, z = Colliding("x"), Colliding("y"), Colliding("z")
    old = immutables.Map({x: 1, y: 2, z: 3})
    new = old.delete(x).set(Colliding("x"), 4)  # x moves behind y in the collision list
    assert list(new.keys()) != list(old.keys())
    assert map_diff(old, new) == ([(x, 4)], [])


def test_the_default_history_keeps_a_worker_busy_for_many_steps_on_deltas() -> None:
    """Under churn every ask of the fastest worker is a step: a worker busy for 30 of them
    (applying its own share) still gets the chain of deltas with the default history, not the
    whole catalog again (with 8 steps it got the whole 100k catalog over and over in
    bench_stall --workers 2, each time ~0.5 s of work that put it behind again)."""
    catalog = build(500)
    feed = SnapshotFeed(catalog=catalog)
    slow, fast = SnapshotReceiver(clock_offset=OFFSET), SnapshotReceiver(clock_offset=OFFSET)
    deliver(slow, feed.messages_for(None))
    deliver(fast, feed.messages_for(None))
    old, c = slow.version, catalog
    for step in range(30):
        c = churn(c, range(step * 5, step * 5 + 5), str(step + 2))
        feed.publish_catalog(c)
        deliver(fast, feed.messages_for(fast.version))
    chain = feed.messages_for(old)
    assert chain and all(isinstance(m, CatalogDelta) for m in chain)
    deliver(slow, chain)
    same_catalog(slow.catalog, c)
