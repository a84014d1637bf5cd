"""The pure catalog core: events in, snapshot and diff out, with merge and staleness rules."""

from __future__ import annotations

import dataclasses

from discovery.catalog import apply, apply_many, expire, next_expiry, routable
from discovery.events import Added, Removed, Resynced, SourceFresh, SourceStale, Updated
from discovery.merge import Policy
from discovery.model import Endpoint, EndpointKey, ServiceName
from discovery.snapshot import Catalog

API = ServiceName("api", "payments")
POLICY = Policy(order=("static", "consul", "mdns"), grace_s=(("consul", 30.0),))


def ep(address: str = "10.0.0.1", port: int = 8080, **kw: object) -> Endpoint:
    return Endpoint(API, address, port, **kw)  # type: ignore[arg-type]


def test_added_endpoint_is_listed_routable_and_in_the_diff() -> None:
    catalog, diff = apply(Catalog(), Added("consul", ep(), "7", 0.0), now=1.0, policy=POLICY)
    assert catalog.version == 1 and len(catalog) == 1
    assert diff.added == {ep().key} and not diff.updated and not diff.removed
    assert routable(catalog, API, now=1.0) == (ep(),)
    (entry,) = catalog.endpoints(API)
    assert entry.sources == ("consul",)
    (prov,) = catalog.provenance(entry)
    assert (prov.source, prov.version, prov.confirmed_at) == ("consul", "7", 1.0)


def test_unhealthy_endpoint_is_listed_but_not_routable() -> None:
    catalog, _ = apply(Catalog(), Added("consul", ep(healthy=False), "1", 0), now=0, policy=POLICY)
    assert len(catalog) == 1
    assert routable(catalog, API, now=0) == ()


def test_same_endpoint_from_two_sources_is_one_entry_with_precedence_for_attributes() -> None:
    catalog, _ = apply(Catalog(), Added("mdns", ep(weight=5), "1", 0), now=0, policy=POLICY)
    catalog, diff = apply(catalog, Added("static", ep(weight=9), "g1", 0), now=1, policy=POLICY)
    assert len(catalog) == 1
    assert diff.updated == {ep().key} and not diff.added
    (entry,) = catalog.endpoints(API)
    assert entry.sources == ("static", "mdns")
    assert entry.endpoint.weight == 9  # static outranks mdns
    # Lower-precedence source changing its attributes does not change the merged endpoint...
    catalog, diff = apply(catalog, Updated("mdns", ep(weight=6), "2", 0), now=2, policy=POLICY)
    assert catalog.endpoints(API)[0].endpoint.weight == 9 and diff.empty
    # ...and removing it from the winning source keeps it, now with mdns attributes.
    catalog, diff = apply(catalog, Removed("static", ep().key, "g2", 0), now=3, policy=POLICY)
    assert diff.updated == {ep().key} and not diff.removed
    (entry,) = catalog.endpoints(API)
    assert entry.sources == ("mdns",) and entry.endpoint.weight == 6
    catalog, diff = apply(catalog, Removed("mdns", ep().key, "3", 0), now=4, policy=POLICY)
    assert diff.removed == {ep().key} and len(catalog) == 0
    assert len(catalog.services) == 0  # no empty service left behind


def test_unknown_sources_rank_after_configured_ones_deterministically() -> None:
    policy = Policy(order=("consul",))
    catalog, _ = apply_many(
        Catalog(),
        [Added("zeta", ep(weight=1), "1", 0), Added("alpha", ep(weight=2), "1", 0)],
        now=0,
        policy=policy,
    )
    assert catalog.endpoints(API)[0].sources == ("alpha", "zeta")
    catalog, _ = apply(catalog, Added("consul", ep(weight=3), "1", 0), now=0, policy=policy)
    assert catalog.endpoints(API)[0].sources == ("consul", "alpha", "zeta")
    assert catalog.endpoints(API)[0].endpoint.weight == 3


def test_resync_replaces_the_whole_view_of_one_source_only() -> None:
    a, b, c = ep("10.0.0.1"), ep("10.0.0.2"), ep("10.0.0.3")
    catalog, _ = apply_many(
        Catalog(),
        [Resynced("consul", (a, b), "5", 0), Added("mdns", b, "1", 0)],
        now=0,
        policy=POLICY,
    )
    catalog, diff = apply(catalog, Resynced("consul", (c,), "6", 0), now=1, policy=POLICY)
    assert diff.added == {c.key} and diff.removed == {a.key} and diff.updated == {b.key}
    keys = {e.key for e in catalog.entries()}
    assert keys == {b.key, c.key}  # b survives through mdns
    assert catalog.source("consul") is not None and catalog.source("consul").version == "6"  # type: ignore[union-attr]


def test_stale_source_stays_routable_for_its_grace_then_expires() -> None:
    catalog, _ = apply(Catalog(), Resynced("consul", (ep(),), "5", 0), now=0, policy=POLICY)
    catalog, diff = apply(catalog, SourceStale("consul", "agent down", 0), now=10, policy=POLICY)
    assert diff.sources_changed == {"consul"} and len(diff) == 0
    (entry,) = catalog.endpoints(API)
    assert catalog.is_stale(entry)
    assert routable(catalog, API, now=39.9) == (ep(),)
    assert routable(catalog, API, now=40.0) == ()  # grace 30 s from the stale mark
    assert next_expiry(catalog) == 40.0
    same, diff = expire(catalog, now=39.0, policy=POLICY)
    assert same is catalog and diff.empty
    # A second stale report does not extend the grace.
    catalog, _ = apply(catalog, SourceStale("consul", "still down", 0), now=20, policy=POLICY)
    assert next_expiry(catalog) == 40.0
    catalog, diff = expire(catalog, now=40.0, policy=POLICY)
    assert diff.removed == {ep().key} and len(catalog) == 0
    assert next_expiry(catalog) is None
    # The source comes back and confirms its unchanged view: the endpoint is back, fresh.
    catalog, diff = apply(catalog, SourceFresh("consul", "5", 0), now=50, policy=POLICY)
    assert diff.added == {ep().key}
    assert not catalog.is_stale(catalog.endpoints(API)[0])
    assert routable(catalog, API, now=50) == (ep(),)


def test_other_sources_use_the_default_grace() -> None:
    policy = Policy(order=("static", "consul", "mdns"), default_grace_s=5.0)
    catalog, _ = apply(Catalog(), Added("mdns", ep(), "1", 0), now=0, policy=policy)
    catalog, _ = apply(catalog, SourceStale("mdns", "thread died", 0), now=1, policy=policy)
    assert next_expiry(catalog) == 6.0


def test_entry_is_fresh_while_any_reporting_source_is_fresh() -> None:
    catalog, _ = apply_many(
        Catalog(),
        [Added("consul", ep(), "1", 0), Added("mdns", ep(), "1", 0), SourceStale("consul", "", 0)],
        now=0,
        policy=POLICY,
    )
    (entry,) = catalog.endpoints(API)
    assert not catalog.is_stale(entry)
    catalog, diff = expire(catalog, now=100, policy=POLICY)
    assert diff.updated == {ep().key}
    assert catalog.endpoints(API)[0].sources == ("mdns",)


def test_resync_makes_a_stale_source_fresh_but_incremental_events_do_not() -> None:
    catalog, _ = apply_many(
        Catalog(),
        [Added("consul", ep(), "1", 0), SourceStale("consul", "x", 0)],
        now=0,
        policy=POLICY,
    )
    catalog, _ = apply(catalog, Added("consul", ep("10.0.0.9"), "2", 0), now=1, policy=POLICY)
    assert catalog.source("consul").stale  # type: ignore[union-attr]
    catalog, diff = apply(catalog, Resynced("consul", (ep(),), "3", 0), now=2, policy=POLICY)
    assert not catalog.source("consul").stale  # type: ignore[union-attr]
    assert diff.removed == {EndpointKey(API, "10.0.0.9", 8080)}


def test_bad_input_is_rejected_and_leaves_the_catalog_unchanged() -> None:
    catalog, _ = apply(Catalog(), Added("consul", ep(), "1", 0), now=0, policy=POLICY)
    bad = [
        Added("consul", ep(port=0), "2", 0),
        Added("consul", ep(port=70000), "2", 0),
        Added("consul", ep(port=True), "2", 0),
        Added("consul", ep(address="10.0.0.1 evil"), "2", 0),
        Added("consul", ep(address=""), "2", 0),
        Added("consul", ep(protocol="gopher"), "2", 0),
        Added("consul", ep(weight=-1), "2", 0),
        Added("consul", ep(metadata=(("k", "v" * 70_000),)), "2", 0),
        Added("consul", Endpoint(ServiceName("API!"), "10.0.0.1", 80), "2", 0),
        Added("", ep(), "2", 0),
        Added("consul", "not an endpoint", "2", 0),  # type: ignore[arg-type]
        Removed("consul", "nope", "2", 0),  # type: ignore[arg-type]
        "not an event",
        Resynced("consul", (ep(port=-5),) * 3, "2", 0),
    ]
    after, diff = apply_many(catalog, bad, now=5, policy=POLICY)  # type: ignore[arg-type]
    assert len(diff.rejected) == len(bad) - 1 + 3  # the Resynced rejects its 3 endpoints
    # The Resynced itself is valid (with zero good endpoints) and empties consul's view.
    assert len(after) == 0 and diff.removed == {ep().key}
    only_bad = bad[:-1]
    same, diff = apply_many(catalog, only_bad, now=5, policy=POLICY)  # type: ignore[arg-type]
    assert same is catalog and diff.empty and len(diff.rejected) == len(only_bad)


def test_resync_over_the_limit_is_refused_whole_and_keeps_the_old_view() -> None:
    policy = dataclasses.replace(POLICY, max_endpoints_per_source=100)
    catalog, _ = apply(Catalog(), Resynced("consul", (ep(),), "1", 0), now=0, policy=policy)
    flood = tuple(ep(port=p) for p in range(1, 102))
    after, diff = apply(catalog, Resynced("consul", flood, "2", 0), now=1, policy=policy)
    assert after is catalog and len(diff.rejected) == 1
    assert "exceeds the limit" in diff.rejected[0].reason
    catalog, _ = apply(catalog, Resynced("consul", flood[:100], "3", 0), now=1, policy=policy)
    assert len(catalog) == 100
    catalog, diff = apply(catalog, Added("consul", ep(port=9999), "4", 0), now=1, policy=policy)
    assert len(catalog) == 100 and len(diff.rejected) == 1


def test_ten_thousand_endpoints_at_once() -> None:
    many = tuple(
        Endpoint(ServiceName(f"svc{i % 100}"), f"10.{i // 250}.{i % 250}.1", 1 + i % 60000)
        for i in range(10_000)
    )
    catalog, diff = apply(Catalog(), Resynced("mdns", many, "1", 0), now=0, policy=POLICY)
    assert len(catalog) == 10_000 and len(diff.added) == 10_000
    assert len(catalog.service_names()) == 100
    assert sum(len(routable(catalog, s, 0)) for s in catalog.service_names()) == 10_000


def test_no_op_events_keep_the_same_snapshot_and_version() -> None:
    catalog, _ = apply(Catalog(), Added("consul", ep(), "1", 0), now=0, policy=POLICY)
    same, diff = apply(catalog, Removed("consul", ep("10.9.9.9").key, "2", 0), now=1, policy=POLICY)
    assert same is catalog and diff.version == catalog.version and diff.empty


def test_confirmation_time_tracks_the_latest_full_confirmation() -> None:
    catalog, _ = apply(Catalog(), Resynced("consul", (ep(),), "1", 0), now=3, policy=POLICY)
    catalog, _ = apply(catalog, SourceFresh("consul", "1", 0), now=9, policy=POLICY)
    (entry,) = catalog.endpoints(API)
    assert catalog.confirmed_at(entry) == 9


def test_old_snapshots_are_unaffected_by_later_changes() -> None:
    first, _ = apply(Catalog(), Added("consul", ep(), "1", 0), now=0, policy=POLICY)
    second, _ = apply(first, Removed("consul", ep().key, "2", 0), now=1, policy=POLICY)
    assert len(first) == 1 and first.endpoints(API)[0].endpoint == ep()
    assert len(second) == 0 and second.version == first.version + 1


def test_a_hidden_change_in_a_lower_precedence_source_is_kept_for_later() -> None:
    catalog, _ = apply_many(
        Catalog(),
        [Added("static", ep(weight=9), "1", 0), Resynced("mdns", (ep(weight=1),), "1", 0)],
        now=0,
        policy=POLICY,
    )
    changed, diff = apply(catalog, Resynced("mdns", (ep(weight=2),), "1", 0), now=0, policy=POLICY)
    assert diff.empty and changed.version == catalog.version + 1  # merged view unchanged...
    changed, diff = apply(changed, Removed("static", ep().key, "2", 0), now=1, policy=POLICY)
    assert changed.endpoints(API)[0].endpoint.weight == 2  # ...but mdns's new report counts
