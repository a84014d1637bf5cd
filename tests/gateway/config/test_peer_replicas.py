"""``[[peers]]`` with ``addresses``: a site's replicas, each a spec of its own for peering."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.errors import ConfigInvalid
from gateway.config.load import load_text
from gateway.config.replicas import host_port
from gateway.reload.apply import peer_specs
from tests.gateway.config.config_kit import GOOD

PEER = """
[[peers]]
name = "gcp-b"
spiffe_id = "spiffe://gcp-b.isthmus.test/isthmus/gateway/gcp-b"
"""


def _load(extra: str):  # type: ignore[no-untyped-def]
    return load_text(GOOD + PEER + extra, base_dir=Path("/etc/isthmus"))


def _problems(extra: str) -> dict[str, str]:
    with pytest.raises(ConfigInvalid) as info:
        _load(extra)
    return {p.path: p.message for p in info.value.problems}


def test_addresses_make_one_spec_per_replica_and_one_address_stays_one() -> None:
    config = _load('addresses = ["127.0.0.1:7001", "[::1]:7002"]\n')
    specs = [s for s in peer_specs(config) if s.name == "gcp-b"]
    assert [(s.host, s.port, s.key) for s in specs] == [
        ("127.0.0.1", 7001, "gcp-b@127.0.0.1:7001"),
        ("::1", 7002, "gcp-b@::1:7002"),
    ]
    assert len({s.spiffe_id for s in specs}) == 1
    single = [s for s in peer_specs(config) if s.name == "gcp-west"]
    assert [(s.port, s.key, s.replica) for s in single] == [(15443, "gcp-west", "")]
    one = _load('addresses = ["127.0.0.1:7001"]\n')
    assert [s.key for s in peer_specs(one) if s.name == "gcp-b"] == ["gcp-b"]


@pytest.mark.parametrize(
    ("extra", "path", "fragment"),
    [
        ('addresses = ["127.0.0.1"]\n', "addresses[0]", "is not host:port"),
        ('addresses = ["127.0.0.1:0"]\n', "addresses[0]", "not in 1..65535"),
        ('addresses = ["::1:7001"]\n', "addresses[0]", "in brackets"),
        ('addresses = ["a:' + "9" * 5000 + '"]\n', "addresses[0]", "not in 1..65535"),
        ('addresses = ["a:\u00b2"]\n', "addresses[0]", "is not host:port"),
        ('addresses = ["a:1", "a:1"]\n', "addresses[1]", "listed twice"),
        ('addresses = ["a:1"]\naddress = "b"\nport = 2\n', "addresses", "not both"),
        (
            "addresses = [" + ", ".join(f'"h:{i}"' for i in range(1, 18)) + "]\n",
            "addresses",
            "at most 16",
        ),
        ("", "address", "is required"),
    ],
)
def test_bad_addresses_name_the_field(extra: str, path: str, fragment: str) -> None:
    problems = _problems(extra)
    assert fragment in problems[f"peers[1].{path}"], problems


def test_host_port() -> None:
    assert host_port("gw.b.example:15443") == ("gw.b.example", 15443)
    assert host_port("[fd00::1]:1") == ("fd00::1", 1)
    with pytest.raises(ValueError, match="not host:port"):
        host_port(":1")


CONSUL = """
[[sources]]
kind = "consul"
name = "consul"
address = "http://127.0.0.1:8500"
"""


def test_a_discovering_peer_needs_no_static_address_and_a_consul_source() -> None:
    problems = _problems('discover = "consul"\n')
    assert "peers" in problems and "consul" in problems["peers"]
    config = _load('discover = "consul"\n' + CONSUL)
    assert [s for s in peer_specs(config) if s.name == "gcp-b"] == []
    assert _problems('discover = "dns"\n' + CONSUL).keys() == {"peers[1].discover"}
    named = _problems('discover = "consul"\n' + CONSUL + '[consul_gateways]\nconsul_source = "x"\n')
    assert "no [[sources]]" in named["consul_gateways.consul_source"]


def test_discovered_replicas_join_the_static_ones_keyed_by_address() -> None:
    from foundation.spiffe_id import SpiffeId
    from gateway.consul_gateways.meta import GatewayInstance

    config = _load('discover = "consul"\naddresses = ["127.0.0.1:7001"]\n' + CONSUL)
    b_id = SpiffeId.parse("spiffe://gcp-b.isthmus.test/isthmus/gateway/gcp-b")
    found = [
        GatewayInstance("x", "gcp-b", "127.0.0.2", 7001, b_id),
        GatewayInstance("y", "gcp-west", "127.0.0.3", 7001, b_id),  # another site
    ]
    specs = [s for s in peer_specs(config, found) if s.name == "gcp-b"]
    assert [s.key for s in specs] == ["gcp-b@127.0.0.1:7001", "gcp-b@127.0.0.2:7001"]
    assert {s.spiffe_id for s in specs} == {b_id}  # the configured one, never Meta's
    alone = _load('discover = "consul"\n' + CONSUL)
    only = [s.key for s in peer_specs(alone, found[:1]) if s.name == "gcp-b"]
    assert only == ["gcp-b@127.0.0.2:7001"]  # keyed by address even when alone


def test_register_in_consul_config() -> None:
    config = _load(
        'address = "127.0.0.1"\nport = 7001\n'
        + CONSUL
        + "[consul_gateways]\nregister = true\nttl_s = 5\n"
    )
    assert config.consul_gateways.register and config.consul_gateways.ttl_s == 5
    bad = _problems(
        'address = "127.0.0.1"\nport = 7001\n[consul_gateways]\nregister = true\n'
        'address = "0.0.0.0"\nttl_s = 0.5\n'
    )
    assert {"consul_gateways.address", "consul_gateways.ttl_s"} <= bad.keys()
    no_source = _problems(
        'address = "127.0.0.1"\nport = 7001\n[consul_gateways]\nregister = true\n'
    )
    assert "consul" in no_source["consul_gateways.register"]


def test_a_wildcard_east_west_listener_needs_the_address_to_register() -> None:
    from gateway.config.load import load_text as load

    text = GOOD.replace('address = "127.0.1.1"', 'address = "0.0.0.0"', 1)
    text += PEER + 'address = "127.0.0.1"\nport = 7001\n' + CONSUL
    with pytest.raises(ConfigInvalid) as info:
        load(text + "[consul_gateways]\nregister = true\n", base_dir=Path("/etc/isthmus"))
    assert "wildcard" in {p.path: p.message for p in info.value.problems}["consul_gateways.address"]
    ok = load(
        text + '[consul_gateways]\nregister = true\naddress = "10.0.0.5"\n', base_dir=Path("/e")
    )
    assert ok.consul_gateways.address == "10.0.0.5"
