#!/usr/bin/env python3
"""Benchmark failover and link-down reaction times of real gateways, as ratios to their bounds.

The end-to-end tests check what happens when a site dies (its routes drop, callers fail over
with no failed request, its imports stay stale for the grace and are then withdrawn, a cut
link is declared down once) with hang guards only; how soon is measured here.  Three gateway
processes on loopback (``tests.e2e.harness``, the test settings: ``ping_interval_s`` 0.5,
``ping_timeout_s`` 1.0, ``import_grace_s`` 3.0) and their demo services.  ``reports`` runs in
``west`` (first in east's failover order) and ``north``.  Per round ``west`` is killed, then
restarted; measured from the kill:

* **routes drop**: until east's ``/routes`` no longer lists west for ``reports``;
* **failover**: until a caller at east is answered by north (requests every 10 ms);
* **withdrawal**: until east's ``/imports`` no longer holds west's services (grace included).

Each is printed with its ratio to the bound it is held to: ``ping_interval_s +
ping_timeout_s`` (a killed process closes its sockets, so this is usually far less), and
``import_grace_s`` plus that for the withdrawal.  With root and ``ip netns`` (``--netns``),
also **link cut**: two gateways in their own namespaces, one host's cable cut (no FIN, no
RST: only the PING deadline can notice), from the cut until the other logs the link down.

Run:  .venv/bin/python scripts/bench_failover.py [--rounds 3] [--netns]
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

from foundation.spiffe_id import TrustDomain
from gateway.demo.admin_client import wait_for
from gateway.demo.runner import gateway_argv, start_child, stop_child
from gateway.demo.topology import DemoService, DemoSite, Topology, build_topology
from tests.e2e.clients import h1_request
from tests.e2e.harness import Overlay, make_topology, open_overlay, routes_of
from tests.netns import lan, netns_skip_reason

HTTP_PORT = 15080
GRACE_S = 3.0
GUARD_S = 60.0  # one event not seen in this long is a hang, not a figure
REPORTS = "reports.default.isthmus"


def topology() -> Topology:
    reports = DemoService("reports", "http", 18090)
    return make_topology(
        ["east", "west", "north"],
        {"east": (), "west": (reports,), "north": (reports,)},
        import_grace_s=GRACE_S,
    )


def west_imported(doc: Any) -> bool:
    return any(p["site"] == "west" and p["services"] for p in doc["peers"])


async def served_by(ov: Overlay) -> str:
    """The site that answered a call to ``reports`` at east ("" for a failed call)."""
    address = str(ov.built["east"].site.address)
    try:
        reply = await h1_request(address, HTTP_PORT, authority=REPORTS, request_timeout_s=10.0)
    except OSError:
        return ""
    return str(reply.json()["site"]) if reply.status == 200 else ""


async def until_served_by(ov: Overlay, site: str) -> float:
    with trio.fail_after(GUARD_S):
        while await served_by(ov) != site:  # noqa: ASYNC110 -- another process answers
            await trio.sleep(0.01)
    return time.monotonic()


async def until_doc(ov: Overlay, path: str, predicate: Any) -> float:
    await wait_for(ov.url("east"), path, predicate, within_s=GUARD_S, interval=0.01)
    return time.monotonic()


async def kill_round(ov: Overlay, figures: dict[str, list[float]]) -> None:
    await ov.wait("east", "/routes", lambda d: routes_of(d, REPORTS) == ["west", "north"])
    await ov.wait("east", "/imports", west_imported)
    await until_served_by(ov, "west")
    killed = time.monotonic()
    await ov.kill("west")
    times: dict[str, float] = {}

    async def measure(name: str, fn: Any, *args: Any) -> None:
        times[name] = await fn(*args) - killed

    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            measure,
            "routes drop",
            until_doc,
            ov,
            "/routes",
            lambda d: routes_of(d, REPORTS) == ["north"],
        )
        nursery.start_soon(measure, "failover", until_served_by, ov, "north")
        nursery.start_soon(
            measure, "withdrawal", until_doc, ov, "/imports", lambda d: not west_imported(d)
        )
    for name, seconds in times.items():
        figures[name].append(seconds)
    await ov.start("west")


async def link_cut_rounds(rounds: int, root: Path) -> list[float]:
    """Seconds from cutting west's cable until east logs the link down, per round."""
    interval, timeout = 0.5, 1.0
    stamp = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) .*link to west is down", re.M)
    out: list[float] = []
    with lan(2) as net:
        east_host, west_host = net.hosts
        web = (DemoService("web", "http", 18080),)
        sites = tuple(
            DemoSite(
                name=name,
                trust_domain=TrustDomain(f"{name}.netns.test"),
                address=ipaddress.IPv4Address(host.address),
                services=web,
                workers=0,  # one process, as the figures in the README were measured
            )
            for name, host in (("east", east_host), ("west", west_host))
        )
        topo = Topology(
            sites=sites, ping_interval_s=interval, ping_timeout_s=timeout, import_grace_s=30.0
        )
        built = {b.site.name: b for b in build_topology(topo, root)}
        log = built["east"].directory / "gateway.log"
        children = [
            await start_child(
                name,
                host.argv(gateway_argv(built[name].config_path)),
                built[name].directory / "gateway.log",
            )
            for name, host in (("east", east_host), ("west", west_host))
        ]

        async def count(needle: str, n: int) -> None:
            with trio.fail_after(GUARD_S):
                while log.read_text("utf-8", "replace").count(needle) < n:  # noqa: ASYNC110
                    await trio.sleep(0.02)

        try:
            for i in range(rounds):
                await count("link to west is up", i + 1)
                await trio.sleep(4 * interval)  # a few PINGs answered
                cut_at = time.time()
                net.set_link(west_host, up=False)
                await count("link to west is down", i + 1)
                found = stamp.findall(log.read_text("utf-8", "replace"))
                down = dt.datetime.strptime(found[-1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
                out.append(down - cut_at)
                net.set_link(west_host, up=True)
        finally:
            with trio.CancelScope(shield=True):
                for child in children:
                    await stop_child(child)
    return out


async def run(rounds: int, netns: bool) -> None:
    topo = topology()
    bound = topo.ping_interval_s + topo.ping_timeout_s
    figures: dict[str, list[float]] = {"routes drop": [], "failover": [], "withdrawal": []}
    with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
        async with open_overlay(Path(tmp), topo, services=True) as ov:
            for _ in range(rounds):
                await kill_round(ov, figures)
    bounds = {"routes drop": bound, "failover": bound, "withdrawal": GRACE_S + bound}
    if netns:
        reason = netns_skip_reason()
        if reason is not None:
            print(f"link cut skipped: {reason}")
        else:
            with tempfile.TemporaryDirectory(prefix="bench-linkcut-") as tmp:
                figures["link cut"] = await link_cut_rounds(rounds, Path(tmp))
            bounds["link cut"] = 0.5 + 1.0
    for name, values in figures.items():
        median = statistics.median(values)
        print(
            f"{name:<12} {median * 1000:8.0f} ms  {median / bounds[name]:5.2f}x the "
            f"{bounds[name]:g} s bound  (median of {len(values)}; max {max(values) * 1000:.0f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--netns", action="store_true", help="also cut a link between namespaces")
    args = parser.parse_args()
    trio.run(run, args.rounds, args.netns)


if __name__ == "__main__":
    main()
