"""Property tests: ANY sequence of events (valid or not) keeps the catalog's invariants.

Invariants checked after every step:
* the merged view equals a from-scratch recompute of the per-source views (merge.recompute);
* ``size`` equals the number of merged entries and no service maps to an empty map;
* versions never decrease, and rise by exactly one iff the snapshot changed;
* the diff is exactly the difference between the previous and the new snapshot;
* every routable endpoint is healthy and listed.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from discovery.catalog import Catalog, Diff, Policy, apply, apply_many, expire, routable
from discovery.events import Added, Event, Removed, Resynced, SourceFresh, SourceStale, Updated
from discovery.merge import recompute
from discovery.model import Endpoint, EndpointKey, ServiceName

POLICY = Policy(order=("static", "consul"), grace_s=(("consul", 5.0),), default_grace_s=2.0)
SOURCES = st.sampled_from(["static", "consul", "mdns", "x"])
SERVICES = st.sampled_from([ServiceName("api"), ServiceName("db", "prod")])
ADDRESSES = st.sampled_from(["10.0.0.1", "10.0.0.2", "fe80::1"])
PORTS = st.sampled_from([1, 80, 65535, 0, 70000, -1])  # includes absurd ports

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
versions = st.text("0123456789", max_size=3)
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
    st.floats(0.0, 4.0, allow_nan=False),
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


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(steps, max_size=25))
def test_any_event_sequence_keeps_invariants(
    script: list[tuple[float, list[Event] | None]],
) -> None:
    catalog = Catalog()
    now = 0.0
    for advance, batch in script:
        now += advance
        if batch is None:
            after, diff = expire(catalog, now, policy=POLICY)
        else:
            after, diff = apply_many(catalog, batch, now=now, policy=POLICY)
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
