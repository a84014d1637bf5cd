"""Export: consent per peer and per tag, aggregation, and incremental recomputation."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.model import PROTOCOLS, Endpoint, ServiceName
from foundation.spiffe_id import SpiffeId
from overlay.federation.config import ExportConfig
from overlay.federation.export import (
    EMPTY_VIEW,
    compute_export,
    consents,
    endpoint_tags,
    update_export,
)
from overlay.federation.protocol import Snapshot, message_json

API = ServiceName("api", "payments")
DB = ServiceName("db", "payments")
WEB = ServiceName("web", "default")


def ep(
    service: ServiceName,
    address: str = "10.0.0.1",
    *,
    healthy: bool = True,
    weight: int = 1,
    protocol: str = "http1",
    sid: str | None = None,
    meta: tuple[tuple[str, str], ...] = (),
) -> Endpoint:
    return Endpoint(
        service,
        address,
        8080,
        protocol=protocol,  # type: ignore[arg-type]
        healthy=healthy,
        weight=weight,
        spiffe_id=SpiffeId.parse(sid) if sid else None,
        metadata=meta,
    )


def test_nothing_leaves_without_a_rule() -> None:
    assert compute_export([ep(API)], [], "west") == EMPTY_VIEW


def test_consent_by_peer_name_namespace() -> None:
    eps = [ep(API), ep(DB), ep(WEB)]
    rules = [
        ExportConfig(service="api", namespace="payments", peers=("west",)),
        ExportConfig(namespace="default"),  # every peer
    ]
    assert set(compute_export(eps, rules, "west")) == {API, WEB}
    assert set(compute_export(eps, rules, "north")) == {WEB}
    assert set(compute_export(eps, [ExportConfig(namespace="payments")], "x")) == {API, DB}


def test_tags_are_per_endpoint_and_all_required() -> None:
    public = ep(API, "10.0.0.1", weight=5, meta=(("tag:public", ""), ("tag:v2", "")))
    listed = ep(API, "10.0.0.2", weight=7, meta=(("tags", " v2 , public,,"),))
    private = ep(API, "10.0.0.3", weight=100, meta=(("tag:v2", ""),))
    assert endpoint_tags(listed) == {"v2", "public"}
    rules = [ExportConfig(tags=("public", "v2"))]
    assert consents(rules, public, "west") and not consents(rules, private, "west")
    view = compute_export([public, listed, private], rules, "west")
    assert view[API].total_count == 2
    assert view[API].capacity == 12  # the untagged endpoint's weight does not leak


def test_aggregate_fields() -> None:
    eps = [
        ep(API, "10.0.0.1", weight=3, protocol="http2", sid="spiffe://east.test/api"),
        ep(API, "10.0.0.2", weight=4, sid="spiffe://east.test/api"),
        ep(API, "10.0.0.3", weight=9, healthy=False, sid="spiffe://east.test/api-canary"),
    ]
    svc = compute_export(eps, [ExportConfig()], "west")[API]
    assert svc.protocols == ("http1", "http2")
    assert (svc.healthy_count, svc.total_count, svc.capacity) == (2, 3, 7)
    assert [str(i) for i in svc.spiffe_ids] == [
        "spiffe://east.test/api",
        "spiffe://east.test/api-canary",
    ]


def test_all_unhealthy_service_is_exported_as_down() -> None:
    svc = compute_export([ep(API, healthy=False)], [ExportConfig()], "west")[API]
    assert (svc.healthy_count, svc.total_count, svc.capacity) == (0, 1, 0)


def test_endpoint_addresses_never_leave_the_site() -> None:
    eps = [ep(API, "10.9.8.7", meta=(("tag:x", ""),)), ep(DB, "fd00::1234")]
    view = compute_export(eps, [ExportConfig()], "west")
    text = json.dumps(message_json(Snapshot("east", "e", 1, tuple(view.values()))))
    assert "10.9.8.7" not in text and "fd00" not in text and "8080" not in text


names = st.sampled_from([API, DB, WEB, ServiceName("x", "y")])
endpoints = st.builds(
    ep,
    names,
    st.sampled_from(["10.0.0.1", "10.0.0.2", "10.0.0.3"]),
    healthy=st.booleans(),
    weight=st.integers(0, 100),
    protocol=st.sampled_from(PROTOCOLS),
    sid=st.sampled_from([None, "spiffe://east.test/a", "spiffe://east.test/b"]),
    meta=st.sampled_from([(), (("tag:public", ""),)]),
)
rule_sets = st.lists(
    st.builds(
        ExportConfig,
        service=st.sampled_from(["*", "api", "db"]),
        namespace=st.sampled_from(["*", "payments"]),
        tags=st.sampled_from([(), ("public",)]),
        peers=st.sampled_from([(), ("west",), ("north",)]),
    ),
    max_size=3,
)


@settings(max_examples=200)
@given(st.lists(endpoints, max_size=12), st.lists(endpoints, max_size=12), rule_sets)
def test_incremental_update_equals_full_recompute(
    before: list[Endpoint], after: list[Endpoint], rules: list[ExportConfig]
) -> None:
    old = compute_export(before, rules, "west")
    new = compute_export(after, rules, "west")
    touched_services = {e.service for e in before} | {e.service for e in after}
    changed = {s: [e for e in after if e.service == s] for s in touched_services}
    view, touched = update_export(old, changed, rules, "west")
    assert view == new
    assert touched == {s for s in set(old) | set(new) if old.get(s) != new.get(s)}
