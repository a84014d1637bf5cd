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
