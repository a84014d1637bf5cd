#!/usr/bin/env python3
"""Measure how soon a survivor routes to a restarted peer gateway, with the default peering
settings (PING 5 s / 3 s, reconnect backoff 0.25 s .. 30 s).

Two real gateway processes on fresh loopback addresses (the end-to-end harness): ``north`` is
killed, left down for ``--down`` seconds (the survivor's backoff grows meanwhile), then started
again; the figure is the time from spawning it until ``east``'s ``/routes`` lists it again,
against the reference measured in the same round: the time until north's own ``/healthz``
first answers ``ok`` (the restarted gateway is up).

    .venv/bin/python scripts/bench_recovery.py --down 20 --rounds 4     # about 2 minutes
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

from gateway.demo.admin_client import wait_for
from gateway.demo.topology import DemoService
from tests.e2e.harness import make_topology, open_overlay, routes_of

ADDRESS = "reports.default.isthmus"


def _defaults(site: str, text: str) -> str:
    """Drop the harness's fast backoff: the gateways run with the default schedule."""
    return text.replace("backoff_base_s = 0.2\n", "").replace("backoff_cap_s = 5.0\n", "")


def _back(doc: Any) -> bool:
    return routes_of(doc, ADDRESS) == ["north"]


async def _start_north(ov: Any, spawned: float, healthy: list[float]) -> None:
    await ov.start("north")  # returns once north's /healthz says ok
    healthy.append(time.monotonic() - spawned)


async def main(down_s: float, rounds: int) -> None:
    topology = make_topology(
        ["east", "north"],
        {"north": (DemoService("reports", "http", 18090),)},
        ping_interval_s=5.0,
        ping_timeout_s=3.0,
        import_grace_s=60.0,
    )
    with tempfile.TemporaryDirectory() as root:
        async with open_overlay(Path(root), topology, patch=_defaults) as ov:
            await ov.wait("east", "/routes", _back)
            for _ in range(rounds):
                await ov.kill("north")
                await ov.wait("east", "/links", lambda d: d["north"]["up"] is False)
                await trio.sleep(down_s)
                spawned = time.monotonic()
                healthy: list[float] = []

                async with trio.open_nursery() as nursery:
                    nursery.start_soon(_start_north, ov, spawned, healthy)
                    await wait_for(ov.url("east"), "/routes", _back, within_s=60, interval=0.02)
                    routed = time.monotonic() - spawned
                link = (await ov.get("east", "/links"))["north"]
                print(
                    f"down {down_s:g}s: east routes to north {routed:.2f}s after north was"
                    f" spawned; north's own /healthz ok at {healthy[0]:.2f}s (difference"
                    f" {routed - healthy[0]:+.2f}s); east's own dial"
                    f" {'had' if link['dialed_link'] else 'had not'} reconnected"
                    f" ({link['failed_attempts']} failed attempts)"
                )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--down", type=float, default=20.0, help="seconds north stays down")
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    trio.run(main, args.down, args.rounds)
