"""A link cut between two hosts is detected by the HTTP/2 PING deadline (issue 4).

Two gateways run in their own network namespaces (separate hosts on one bridged link,
198.18.0.0/15 addresses).  Cutting one host's cable black-holes the link -- no RST, no FIN --
so only the liveness PING can notice.  The detection bound is ``ping_interval + ping_timeout``;
when the cable is back, the dialer's backoff reconnects without operator action.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import time
from pathlib import Path

import pytest
import trio

from foundation.spiffe_id import TrustDomain
from gateway.demo.runner import gateway_argv, start_child, stop_child
from gateway.demo.topology import DemoService, DemoSite, Topology, build_topology
from tests.netns import lan, netns_skip_reason

pytestmark = pytest.mark.netns

PING_INTERVAL = 0.5
PING_TIMEOUT = 1.0
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*link to west is down", re.M)


def _down_times(log: str) -> list[float]:
    out = []
    for match in _STAMP.finditer(log):
        stamp = dt.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
        out.append(stamp.timestamp())
    return out


def _count(path: Path, needle: str) -> int:
    return path.read_text("utf-8", "replace").count(needle)


async def _wait_log(path: Path, needle: str, *, count: int = 1, within_s: float = 30.0) -> None:
    """Poll the gateway's log (another process writes it: there is nothing to wait on)."""
    with trio.fail_after(within_s):
        while _count(path, needle) < count:  # noqa: ASYNC110
            await trio.sleep(0.05)


async def test_black_holed_link_is_declared_down_within_the_ping_deadline(
    tmp_path: Path,
) -> None:
    reason = netns_skip_reason()
    if reason is not None:
        pytest.skip(reason)
    with lan(2) as net:
        east_host, west_host = net.hosts
        web = (DemoService("web", "http", 18080),)
        topology = Topology(
            sites=tuple(
                DemoSite(
                    name=name,
                    trust_domain=TrustDomain(f"{name}.netns.test"),
                    address=ipaddress.IPv4Address(host.address),
                    services=web,
                    # One process: one link each way to time (with workers every process has
                    # its own links, with the same liveness, and logs its own "down").
                    workers=0,
                )
                for name, host in (("east", east_host), ("west", west_host))
            ),
            ping_interval_s=PING_INTERVAL,
            ping_timeout_s=PING_TIMEOUT,
            import_grace_s=30.0,
        )
        built = {b.site.name: b for b in build_topology(topology, tmp_path)}
        east_log = built["east"].directory / "gateway.log"
        children = [
            await start_child(
                name,
                host.argv(gateway_argv(built[name].config_path)),
                built[name].directory / "gateway.log",
            )
            for name, host in (("east", east_host), ("west", west_host))
        ]
        try:
            await _wait_log(east_log, "link to west is up")
            await trio.sleep(2 * PING_INTERVAL)  # a few PINGs answered: the link is healthy
            assert _count(east_log, "link to west is down") == 0
            cut_at = time.time()
            net.set_link(west_host, up=False)
            # Hang guard: 5x the detection bound.  That the bound holds is checked exactly on
            # the autojump clock (tests/overlay/h2/test_liveness.py); how long detection takes
            # here is measured by scripts/bench_failover.py.
            await _wait_log(
                east_log, "link to west is down", within_s=5 * (PING_INTERVAL + PING_TIMEOUT)
            )
            downs = _down_times(east_log.read_text("utf-8"))
            # Declared down once, after the cut (log stamps have ms resolution, and nothing
            # can be detected within a ms of the cut).
            assert len(downs) == 1 and downs[0] >= cut_at - 0.001, (downs, cut_at)

            net.set_link(west_host, up=True)
            await _wait_log(east_log, "link to west is up", count=2, within_s=30.0)
        finally:
            with trio.CancelScope(shield=True):
                for child in children:
                    await stop_child(child)
