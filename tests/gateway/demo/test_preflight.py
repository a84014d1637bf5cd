"""The demo's decisions without processes: its binds, moving it, reporting an exit, and the
log level of a failed dial while peers start together."""

from __future__ import annotations

import ipaddress
import logging
import signal
import socket
from pathlib import Path

import pytest

from gateway.demo.preflight import PortUnavailable, check_binds, planned_binds, relocate
from gateway.demo.runner import describe_exit
from gateway.demo.topology import default_topology
from overlay.peering.links import dial_failure_level
from tests.e2e.harness import loopback_block


def test_every_listener_service_port_and_example_service_is_planned() -> None:
    topology = default_topology()
    binds = {(b.address, b.port) for b in planned_binds(topology)}
    for site in topology.sites:
        a = str(site.address)
        for port in (15000, 15080, 15443, 15444, 16001, 16002):
            assert (a, port) in binds
        for svc in site.services:
            assert (a, svc.port) in binds


def test_a_port_planned_twice_is_refused_before_anything_binds() -> None:
    topology = relocate(default_topology(), ports={"admin_port": 15080})
    with pytest.raises(PortUnavailable, match=r"127\.0\.1\.1:15080 is planned twice"):
        planned_binds(topology)


def test_relocate_moves_every_site_by_256_from_the_base() -> None:
    moved = relocate(
        default_topology(),
        base_address=ipaddress.IPv4Address("127.0.5.1"),
        ports={"admin_port": 15100, "http_port": 15180},
    )
    assert [str(s.address) for s in moved.sites] == ["127.0.5.1", "127.0.6.1", "127.0.7.1"]
    assert (moved.admin_port, moved.http_port) == (15100, 15180)


def test_relocate_refuses_addresses_off_loopback() -> None:
    with pytest.raises(ValueError, match=r"outside 127\.0\.0\.0/8"):
        relocate(default_topology(), base_address=ipaddress.IPv4Address("127.255.255.1"))
    with pytest.raises(ValueError, match=r"outside 127\.0\.0\.0/8"):
        relocate(default_topology(), base_address=ipaddress.IPv4Address("10.0.0.1"))


def test_a_listening_port_is_named_as_in_use() -> None:
    address = f"127.{loopback_block()}.9.1"
    with socket.socket() as holder:
        holder.bind((address, 0))
        holder.listen()
        port = holder.getsockname()[1]
        topology = relocate(
            default_topology(),
            base_address=ipaddress.IPv4Address(address),
            ports={"admin_port": port},
        )
        with pytest.raises(PortUnavailable, match=rf"address {address}:{port} is already in use"):
            check_binds(planned_binds(topology))
    check_binds(planned_binds(topology))  # released: free again


def test_an_exit_reads_as_a_person_says_it() -> None:
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"
    assert describe_exit(3) == "status 3"


@pytest.mark.parametrize(
    ("links", "since", "level"),
    [
        (0, 0.0, logging.INFO),  # peers start together: not a warning
        (0, 29.9, logging.INFO),
        (0, 30.0, logging.WARNING),  # still unreachable after the grace
        (1, 0.5, logging.WARNING),  # it was linked and is gone
    ],
)
def test_a_failed_dial_is_a_warning_only_past_the_startup_grace(
    links: int, since: float, level: int
) -> None:
    assert dial_failure_level(links_established=links, since_start=since, grace=30.0) == level


def test_the_startup_grace_is_a_validated_peering_setting() -> None:
    from gateway.app import peering_settings
    from gateway.config.errors import ConfigInvalid
    from gateway.config.load import load_text
    from tests.gateway.config.config_kit import GOOD

    config = load_text(GOOD + "\n[peering]\nstartup_grace_s = 5.0\n", base_dir=Path("/etc"))
    assert peering_settings(config).startup_grace == 5.0
    with pytest.raises(ConfigInvalid) as info:
        load_text(GOOD + "\n[peering]\nstartup_grace_s = -1\n", base_dir=Path("/etc"))
    assert [p.path for p in info.value.problems] == ["peering.startup_grace_s"]
