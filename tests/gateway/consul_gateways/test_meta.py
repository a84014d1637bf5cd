"""The pure half of gateway discovery through Consul: registration body, Meta parsing and
validation, a site's replicas, the replica diff."""

from __future__ import annotations

from typing import Any

import pytest

from discovery.sources.consul_parse import ConsulMalformedResponse
from foundation.spiffe_id import SpiffeId
from gateway.consul_gateways.meta import (
    META_EAST_WEST,
    META_SITE,
    META_SPIFFE_ID,
    SERVICE,
    GatewayInstance,
    parse_instances,
    registration,
    replica_diff,
    site_replicas,
)

B_ID = SpiffeId.parse("spiffe://b.isthmus.test/isthmus/gateway/b")


def _entry(sid: str, **meta: str) -> dict[str, Any]:
    base = {META_SITE: "b", META_EAST_WEST: "127.0.0.2:15443", META_SPIFFE_ID: str(B_ID)}
    base.update({k.replace("_", "-"): v for k, v in meta.items()})
    return {"Node": {"Node": "n"}, "Service": {"ID": sid, "Service": SERVICE, "Meta": base}}


def test_registration_body_is_the_documented_agent_shape() -> None:
    body = registration(site="b", spiffe_id=B_ID, host="127.0.0.2", port=15443, ttl_s=15.0)
    assert body["Name"] == SERVICE
    assert body["ID"] == "isthmus-gateway-b-127.0.0.2-15443"
    assert (body["Address"], body["Port"]) == ("127.0.0.2", 15443)
    assert body["Meta"] == {
        META_SITE: "b",
        META_EAST_WEST: "127.0.0.2:15443",
        META_SPIFFE_ID: str(B_ID),
    }
    assert body["Check"]["TTL"] == "15000ms"
    assert body["Check"]["CheckID"] == f"service:{body['ID']}"
    assert "DeregisterCriticalServiceAfter" not in body["Check"]
    v6 = registration(site="b", spiffe_id=B_ID, host="::1", port=7, ttl_s=3, deregister_after_s=90)
    assert v6["Meta"][META_EAST_WEST] == "[::1]:7"
    assert ":" not in v6["ID"].removeprefix("isthmus-gateway")
    assert v6["Check"]["DeregisterCriticalServiceAfter"] == "90000ms"


def test_parse_reads_good_instances_and_skips_bad_meta_one_by_one() -> None:
    data = [
        _entry("ok"),
        _entry("no-site", isthmus_site=""),
        _entry("bad-site", isthmus_site="B_1"),
        _entry("bad-addr", isthmus_east_west="127.0.0.2"),
        _entry("bad-id", isthmus_spiffe_id="http://nope"),
        _entry("long", isthmus_site="b" * 600),
        {"Node": {}, "Service": {"ID": "no-meta", "Service": SERVICE}},
    ]
    found, skipped = parse_instances(data)
    assert found == (GatewayInstance("ok", "b", "127.0.0.2", 15443, B_ID),)
    assert len(skipped) == 6
    assert any("'bad-addr'" in s and META_EAST_WEST in s for s in skipped)
    assert any("'bad-id'" in s and META_SPIFFE_ID in s for s in skipped)


@pytest.mark.parametrize("data", [{}, [1], [{"Service": "x"}], [{"Service": {"ID": 3}}]])
def test_a_malformed_answer_is_refused_whole(data: object) -> None:
    with pytest.raises(ConsulMalformedResponse):
        parse_instances(data)


def test_site_replicas_filter_by_site_and_configured_identity() -> None:
    other = SpiffeId.parse("spiffe://evil.test/isthmus/gateway/b")
    instances = [
        GatewayInstance("2", "b", "127.0.0.3", 15443, B_ID),
        GatewayInstance("1", "b", "127.0.0.2", 15443, B_ID),
        GatewayInstance("dup", "b", "127.0.0.2", 15443, B_ID),
        GatewayInstance("c", "c", "127.0.0.9", 15443, B_ID),
        GatewayInstance("liar", "b", "127.0.0.66", 15443, other),
    ]
    hosts, skipped = site_replicas(instances, site="b", spiffe_id=B_ID)
    assert hosts == (("127.0.0.2", 15443), ("127.0.0.3", 15443))
    assert len(skipped) == 1 and "'liar'" in skipped[0]
    static = (("127.0.0.3", 15443), ("10.0.0.1", 1))
    hosts, _ = site_replicas(instances, site="b", spiffe_id=B_ID, static=static)
    assert hosts == (("127.0.0.3", 15443), ("10.0.0.1", 1), ("127.0.0.2", 15443))


def test_site_replicas_are_bounded() -> None:
    many = [GatewayInstance(str(i), "b", f"127.0.1.{i}", 1, B_ID) for i in range(40)]
    hosts, skipped = site_replicas(many, site="b", spiffe_id=B_ID)
    assert len(hosts) == 16 and len(skipped) == 24


def test_replica_diff() -> None:
    old = [("127.0.0.2", 1), ("127.0.0.3", 1)]
    new = [("127.0.0.3", 1), ("::1", 2)]
    assert replica_diff(old, new) == (("[::1]:2",), ("127.0.0.2:1",))
    assert replica_diff(old, old) == ((), ())
