"""Property tests: ANY sequence of events (valid or not) keeps the catalog's invariants.

Invariants checked after every step:
* each source's view equals a naive model of the event semantics;
* the merged view equals a from-scratch recompute of the per-source views (merge.recompute);
* ``size`` equals the number of merged entries and no service maps to an empty map;
* versions never decrease, and rise by exactly one iff the snapshot changed;
* the diff is exactly the difference between the previous and the new snapshot;
* every routable endpoint is healthy and listed.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from discovery.catalog import apply, apply_many, expire, routable
from discovery.diff import Diff
from discovery.events import Added, Event, Removed, Resynced, SourceFresh, SourceStale, Updated
from discovery.merge import Policy, recompute
from discovery.model import Endpoint, EndpointKey, ServiceName
from discovery.snapshot import Catalog

POLICY = Policy(order=("static", "consul"), grace_s=(("consul", 5.0),), default_grace_s=2.0)
SOURCES = st.sampled_from(["static", "consul", "mdns", "x"])
SERVICES = st.sampled_from([ServiceName("api"), ServiceName("db", "prod")])
ADDRESSES = st.sampled_from(["10.0.0.1", "fe80::1"])
PORTS = st.sampled_from([80, 65535, 0, 70000, -1])  # includes absurd ports

endpoints = st.builds(
    Endpoint,
    service=SERVICES,
    address=ADDRESSES,
    port=PORTS,
    protocol=st.sampled_from(["http1", "http2", "tcp", "tls"]),
    healthy=st.booleans(),
    weight=st.integers(0, 3),
)
keys = st.builds(EndpointKey, SERVICES, ADDRESSES, PORTS)
versions = st.sampled_from(["", "1", "2"])
at = st.just(0.0)

events: st.SearchStrategy[Event] = st.one_of(
    st.builds(Added, SOURCES, endpoints, versions, at),
    st.builds(Updated, SOURCES, endpoints, versions, at),
    st.builds(Removed, SOURCES, keys, versions, at),
    st.builds(Resynced, SOURCES, st.lists(endpoints, max_size=6).map(tuple), versions, at),
    st.builds(SourceStale, SOURCES, st.just("down"), at),
    st.builds(SourceFresh, SOURCES, versions, at),
)
# A step is a batch of events applied at once, or an expiry check, after time advances.
steps = st.tuples(
    st.sampled_from([0.0, 0.0, 0.5, 1.5, 3.0]),
    st.one_of(st.none(), st.lists(events, min_size=1, max_size=4)),
)


def check_invariants(catalog: Catalog) -> None:
    expected = recompute(POLICY, catalog.sources, catalog.views)
    assert catalog.services == expected
    assert catalog.size == sum(len(m) for m in catalog.services.values())
    assert all(len(m) > 0 for m in catalog.services.values())
    for entry in catalog.entries():
        assert entry.sources and len(set(entry.sources)) == len(entry.sources)
        assert catalog.provenance(entry)[0].source == entry.sources[0]


def model_step(views: dict[str, dict[EndpointKey, Endpoint]], event: Event) -> None:
    """The simplest possible reading of the event semantics (only bad ports are generated)."""

    def ok(e: Endpoint) -> bool:
        return 1 <= e.port <= 65535

    if isinstance(event, Added | Updated):
        if ok(event.endpoint):
            views.setdefault(event.source, {})[event.endpoint.key] = event.endpoint
    elif isinstance(event, Removed):
        views.get(event.source, {}).pop(event.key, None)
    elif isinstance(event, Resynced):
        views[event.source] = {e.key: e for e in event.endpoints if ok(e)}


def check_views(catalog: Catalog, views: dict[str, dict[EndpointKey, Endpoint]]) -> None:
    actual = {
        name: {k: r.endpoint for k, r in view.items()}
        for name, view in catalog.views.items()
        if len(view)
    }
    assert actual == {name: view for name, view in views.items() if view}


def check_diff(before: Catalog, after: Catalog, diff: Diff) -> None:
    keys = {e.key for e in before.entries()} | {e.key for e in after.entries()}
    added = {k for k in keys if before.get(k) is None and after.get(k) is not None}
    removed = {k for k in keys if before.get(k) is not None and after.get(k) is None}
    updated = {
        k
        for k in keys
        if before.get(k) is not None and after.get(k) is not None and before.get(k) != after.get(k)
    }
    assert (diff.added, diff.removed, diff.updated) == (added, removed, updated)
    names = set(before.sources.keys()) | set(after.sources.keys())
    changed = {n for n in names if before.sources.get(n) != after.sources.get(n)}
    assert diff.sources_changed == changed
    assert diff.version == after.version
    if after is before:
        assert diff.empty
    else:
        assert after.version == before.version + 1
        assert after != before


_E0 = Endpoint(ServiceName("api"), "10.0.0.1", 80, healthy=False)
_E1 = Endpoint(ServiceName("api"), "10.0.0.1", 80, healthy=True)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, max_size=25))
# Regression: a resync that changes only a lower-precedence view (same time, same version)
# must still produce a new snapshot, or the change is lost when the winner goes away.
@example(
    [
        (0.0, [Added("static", _E0, "", 0.0), Resynced("x", (_E0,), "", 0.0)]),
        (0.0, [Resynced("x", (_E1,), "", 0.0)]),
        (0.0, [Removed("static", _E0.key, "", 0.0)]),
    ]
)
def test_any_event_sequence_keeps_invariants(
    script: list[tuple[float, list[Event] | None]],
) -> None:
    catalog = Catalog()
    views: dict[str, dict[EndpointKey, Endpoint]] = {}
    now = 0.0
    for advance, batch in script:
        now += advance
        if batch is None:
            after, diff = expire(catalog, now, policy=POLICY)
        else:
            after, diff = apply_many(catalog, batch, now=now, policy=POLICY)
            for event in batch:
                model_step(views, event)
        check_views(after, views)
        check_invariants(after)
        check_diff(catalog, after, diff)
        for service in after.service_names():
            for endpoint in routable(after, service, now):
                entry = after.get(endpoint.key)
                assert entry is not None and entry.endpoint.healthy
        catalog = after


@settings(max_examples=150, deadline=None)
@given(st.lists(events, max_size=12))
def test_one_batch_equals_the_same_events_one_by_one(batch: list[Event]) -> None:
    """Batching is only an optimisation: same final snapshot content."""
    together, _ = apply_many(Catalog(), batch, now=1.0, policy=POLICY)
    single = Catalog()
    for event in batch:
        single, _ = apply(single, event, now=1.0, policy=POLICY)
    assert together.services == single.services
    assert together.views == single.views
    assert together.sources == single.sources
