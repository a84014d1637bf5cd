"""The memo of routable endpoints gives exactly what the catalog rule gives, at every instant."""

from __future__ import annotations

from discovery.catalog import apply, routable
from discovery.events import Resynced, SourceStale
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from gateway.cluster.routable_memo import RoutableMemo

API = ServiceName("api", "default")
POLICY = Policy(grace_s=(("consul", 10.0),), default_grace_s=10.0)


def _catalog() -> Catalog:
    eps = tuple(Endpoint(API, f"10.0.0.{i}", 80) for i in range(3))
    catalog, _ = apply(Catalog(), Resynced("consul", eps, "1", 0.0), now=0.0, policy=POLICY)
    return catalog


def test_a_stale_sources_endpoints_leave_when_its_grace_ends() -> None:
    catalog, _ = apply(_catalog(), SourceStale("consul", "down", 5.0), now=5.0, policy=POLICY)
    memo = RoutableMemo()
    for now in (5.0, 9.0, 14.9, 15.0, 16.0, 3.0):
        assert memo.get(catalog, API, now) == routable(catalog, API, now), now
    assert memo.get(catalog, API, 6.0) != ()  # within the grace (asked again after expiry)
    assert memo.get(catalog, API, 15.0) == ()


def test_a_new_snapshot_is_a_new_answer_and_the_same_one_is_remembered() -> None:
    memo = RoutableMemo()
    first = _catalog()
    answer = memo.get(first, API, 1.0)
    assert len(answer) == 3 and memo.get(first, API, 2.0) is answer
    fewer, _ = apply(first, Resynced("consul", answer[:1], "2", 3.0), now=3.0, policy=POLICY)
    assert memo.get(fewer, API, 3.0) == answer[:1]
    assert memo.get(fewer, ServiceName("other", "default"), 3.0) == ()
