"""The demo topology's ``workers`` field: what ``[site] workers`` each site's gateway gets."""

from __future__ import annotations

import ipaddress
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from foundation.spiffe_id import TrustDomain
from gateway.config.errors import ConfigInvalid
from gateway.demo.topology import DemoSite, Topology, gateway_config_text, load_topology


def _site(name: str, workers: int | None) -> DemoSite:
    return DemoSite(
        name=name,
        trust_domain=TrustDomain(f"{name}.test"),
        address=ipaddress.IPv4Address("127.0.9.1"),
        workers=workers,
    )


def test_a_site_with_workers_writes_them_in_its_site_table() -> None:
    site = _site("a", 2)
    text = gateway_config_text(Topology(sites=(site,)), site, Path("/r"))
    assert tomllib.loads(text)["site"]["workers"] == 2


def test_a_site_without_workers_leaves_the_gateway_default() -> None:
    site = _site("a", None)
    text = gateway_config_text(Topology(sites=(site,)), site, Path("/r"))
    assert "workers" not in tomllib.loads(text)["site"]
    zero = replace(site, workers=0)  # 0 is written: a single process, whatever the default
    assert (
        tomllib.loads(gateway_config_text(Topology(sites=(zero,)), zero, Path("/r")))["site"][
            "workers"
        ]
        == 0
    )


TOPOLOGY = """
[[sites]]
name = "a"
trust_domain = "a.test"
address = "127.0.9.1"
workers = {workers}
"""


def test_a_topology_file_sets_workers_within_bounds() -> None:
    assert load_topology(TOPOLOGY.format(workers=2)).sites[0].workers == 2
    with pytest.raises(ConfigInvalid) as caught:
        load_topology(TOPOLOGY.format(workers=65))
    assert "sites[0].workers" in str(caught.value)
