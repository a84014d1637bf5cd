"""The routing view folds in only the local services that changed, and a full build is sliced.

Counted, not timed: the imported services are held in a mapping that counts every entry read,
and a trio instrument records the most read in one task step.  Before the fold, every catalog
publish rebuilt the whole view -- every service of every peer (10k at the benchmark's scale) in
one step of the event loop -- for a change of one local service.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import immutables
import trio
import trio.lowlevel
import trio.testing

from discovery.catalog import apply, apply_many, serving_endpoints
from discovery.events import Resynced, Updated
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from discovery.watch import Watch
from overlay.federation.import_ import ImportedService, ImportTable, PeerImports
from overlay.peering.route_fold import RouteFold
from overlay.peering.route_table import RouteView, build_route_view
from overlay.peering.routes import RoutePublisher
from tests.overlay.federation.strategies import svc

POLICY = Policy(order=("static",))
LOCAL = 60
IMPORTED = 3000
SLICE = 500


class Counting(Mapping[ServiceName, ImportedService]):
    """A peer's imported services that count the entries anyone reads."""

    def __init__(self, items: dict[ServiceName, ImportedService], meter: list[int]) -> None:
        self._items = items
        self._meter = meter

    def __getitem__(self, key: ServiceName) -> ImportedService:
        self._meter[0] += 1
        return self._items[key]

    def __iter__(self) -> Iterator[ServiceName]:
        for key in self._items:
            self._meter[0] += 1
            yield key

    def __len__(self) -> int:
        return len(self._items)


class MostPerStep(trio.abc.Instrument):
    def __init__(self, meter: list[int]) -> None:
        self.meter = meter
        self.start = 0
        self.most = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.start = self.meter[0]

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.most = max(self.most, self.meter[0] - self.start)


def local_endpoint(i: int, healthy: bool = True) -> Endpoint:
    return Endpoint(ServiceName(f"svc{i}"), "10.0.0.1", 8000 + i, healthy=healthy)


def catalog() -> Catalog:
    event = Resynced("static", tuple(local_endpoint(i) for i in range(LOCAL)), "1", 0.0)
    return apply(Catalog(), event, now=0.0, policy=POLICY)[0]


def imports(meter: list[int]) -> ImportTable:
    # the peer exports half of the local services too, and many more of its own
    services = {
        ServiceName(f"svc{i}"): ImportedService("b", svc(f"svc{i}", healthy=i % 3), 1)
        for i in range(LOCAL // 2, IMPORTED)
    }
    peer = PeerImports("b", "e", 1, Counting(services, meter), confirmed_at=0.0)  # type: ignore[arg-type]
    return ImportTable(grace=30.0, peers=immutables.Map({"b": peer}))


def reference(cat: Catalog, table: ImportTable) -> Any:
    return build_route_view("home", serving_endpoints(cat, 1.0), table, {}, 1.0)


def test_a_local_change_refolds_only_the_changed_services() -> None:
    from discovery.steps import complete

    meter = [0]
    table, cat = imports(meter), catalog()
    fold = RouteFold("home")
    view = complete(fold.fold_steps(cat, table, {}, 1.0, down_peers=frozenset(), slice_items=SLICE))
    assert view == reference(cat, table) and fold.full_builds == 1
    changes = [Updated("static", local_endpoint(i, healthy=False), "2", 1.0) for i in (3, 40)]
    cat, _ = apply_many(cat, changes, now=1.0, policy=POLICY)
    meter[0] = 0
    view = complete(fold.fold_steps(cat, table, {}, 1.0, down_peers=frozenset(), slice_items=SLICE))
    assert meter[0] <= 2  # svc40's imported entry, not the peer's whole export
    assert fold.full_builds == 1 and fold.services_folded == 2
    assert view == reference(cat, table)
    assert view.routes[ServiceName("svc40")] == ("b",) and ServiceName("svc3") not in view.routes
    # a link going down changes every service's routes: a full build
    down = frozenset({"b"})
    view = complete(fold.fold_steps(cat, table, {}, 1.0, down_peers=down, slice_items=SLICE))
    assert fold.full_builds == 2
    assert view == build_route_view(
        "home", serving_endpoints(cat, 1.0), table, {}, 1.0, down_peers=down
    )


async def test_the_publisher_refolds_only_what_changed_in_slices(
    autojump_clock: trio.testing.MockClock,
) -> None:
    meter = [0]
    probe = MostPerStep(meter)
    catalogs = Watch(catalog())
    publisher = RoutePublisher(
        local_site="home",
        catalog=catalogs,
        imports=Watch(imports(meter)),
        peers={},
        slice_items=SLICE,
    )
    trio.lowlevel.add_instrument(probe)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(publisher.run)
            with trio.fail_after(60):
                while publisher.routes.latest != reference(catalogs.latest, imports([0])):
                    await publisher.routes.wait_newer(publisher.routes.count)
            # The full build read at most one slice of entries per step (a Mapping's items()
            # reads each entry twice: the key, then the value); unsliced it was all of them.
            assert 0 < probe.most <= 2 * SLICE
            read = meter[0]
            change = Updated("static", local_endpoint(46, healthy=False), "2", 1.0)
            catalogs.publish(apply(catalogs.latest, change, now=1.0, policy=POLICY)[0])
            with trio.fail_after(60):
                while publisher.routes.latest.routes.get(ServiceName("svc46")) != ("b",):
                    await publisher.routes.wait_newer(publisher.routes.count)
            assert meter[0] - read <= 2
            nursery.cancel_scope.cancel()
    finally:
        trio.lowlevel.remove_instrument(probe)


def reweighted(i: int) -> Updated:
    """A local endpoint's change that moves no route (its service stays served locally)."""
    ep = Endpoint(ServiceName(f"svc{i}"), "10.0.0.1", 8000 + i, weight=7)
    return Updated("static", ep, "3", 1.0)


def test_a_fold_that_moves_no_route_returns_the_same_view_object() -> None:
    from discovery.steps import complete

    table, cat = imports([0]), catalog()
    fold = RouteFold("home")
    first = complete(
        fold.fold_steps(cat, table, {}, 1.0, down_peers=frozenset(), slice_items=SLICE)
    )
    cat, _ = apply_many(cat, [reweighted(3), reweighted(40)], now=1.0, policy=POLICY)
    again = complete(
        fold.fold_steps(cat, table, {}, 1.0, down_peers=frozenset(), slice_items=SLICE)
    )
    assert fold.services_folded == 2 and fold.full_builds == 1
    assert again is first  # an identity check for the publisher, not a compare of every route
    assert again == reference(cat, table)


async def test_the_publisher_does_not_compare_views_when_no_route_moved(
    autojump_clock: trio.testing.MockClock, monkeypatch: Any
) -> None:
    catalogs = Watch(catalog())
    publisher = RoutePublisher(
        local_site="home", catalog=catalogs, imports=Watch(imports([0])), peers={}
    )
    compares = [0]
    plain_eq = RouteView.__eq__

    def counting_eq(self: RouteView, other: object) -> bool:
        compares[0] += 1
        return plain_eq(self, other)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(publisher.run)
        with trio.fail_after(60):
            while publisher.routes.latest != reference(catalogs.latest, imports([0])):
                await publisher.routes.wait_newer(publisher.routes.count)
        published = publisher.routes.count
        monkeypatch.setattr(RouteView, "__eq__", counting_eq)
        for round_ in range(3):
            folded = publisher._fold.services_folded
            catalogs.publish(
                apply(catalogs.latest, reweighted(3 + round_), now=1.0, policy=POLICY)[0]
            )
            await trio.testing.wait_all_tasks_blocked()
            assert publisher._fold.services_folded == folded + 1
        assert compares[0] == 0  # each fold moved nothing: settled by identity
        assert publisher.routes.count == published
        nursery.cancel_scope.cancel()
