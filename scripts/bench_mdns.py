#!/usr/bin/env python3
"""Benchmark the mDNS source's reaction times against plain zeroconf, over real multicast.

The netns tests check what the source does (an endpoint is removed *by* a goodbye, *never
before* its TTL ran out); how soon is measured here, where a busy machine makes a figure
noisy instead of making a build red.  Three network namespaces on one bridge
(:mod:`tests.netns`, 198.18.0.0/15): a zeroconf publisher
(``tests.discovery.sources.mdns_publish``), the Isthmus source
(``tests.discovery.sources.mdns_browse``) and, as the floor, a plain zeroconf ``ServiceBrowser``
(``tests.discovery.sources.mdns_plain_browse``), all on system-wide ``time.monotonic()``
stamps.  Measured, per round:

* **goodbye**: from the publisher starting to unregister until each browser reports the
  instance removed; the bound is RFC 6762's one second for a record said goodbye to;
* **goodbye after a flood**: the same, once, right after one host multicast 10 000 instances
  (the source caps them at ``max_instances``);
* **silent death**: a publisher announcing with a 2 s TTL is killed; from the kill until each
  browser reports the removal (the TTL is the bound) -- the source's own timer against plain
  zeroconf, which may not report it at all within the guard;
* **cancel**: cancelling ``serve_mdns_source`` until it returned with zeroconf's threads
  joined, in this process on 127.0.0.1, against opening and closing a plain
  ``Zeroconf`` + ``ServiceBrowser`` (the same work without the source).

Each figure is printed with the floor's and their ratio (and for removals, the ratio to the
bound).  Needs root and ``ip netns`` for the multicast parts (skipped with the reason
otherwise).

Run:  .venv/bin/python scripts/bench_mdns.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio
from zeroconf import ServiceBrowser, Zeroconf

from discovery.events import Event
from discovery.sources.config import MdnsSourceConfig
from discovery.sources.mdns import serve_mdns_source
from tests.discovery.sources.mdns_procs import (
    Line,
    Proc,
    added,
    browser,
    publisher,
    register,
    removed,
)
from tests.netns import Host, lan, netns_skip_reason

TTL_S = 120  # the goodbye rounds: far from expiring by themselves
SILENT_TTL_S = 2
GUARD_S = 30.0  # give up on one event after this (a hang, not a figure)


def plain_browser(procs: list[Proc], host: Host) -> Proc:
    p = Proc(host, "tests.discovery.sources.mdns_plain_browse", host.address)
    procs.append(p)
    p.wait_for(lambda e: e["ev"] == "ready", 10, "plain browser ready")
    return p


def plain(ev: str, label: str) -> Callable[[Line], bool]:
    return lambda e: e["ev"] == ev and e.get("label") == label


def goodbye_round(
    pub: Proc, ours: Proc, floor: Proc, label: str, port: int, *, flood: bool = False
) -> tuple[float, float]:
    """Seconds from the goodbye to the removal: (Isthmus source, plain zeroconf).  With
    ``flood``, 10 000 instances are multicast between registering and the goodbye."""
    register(pub, label, port, ttl=TTL_S)
    ours.wait_for(added(port), GUARD_S, f"{label} added")
    floor.wait_for(plain("added", label), GUARD_S, f"{label} added (plain)")
    if flood:
        pub.send({"op": "flood", "count": 10_000})
        pub.wait_for(lambda e: e.get("ok") == "flood", GUARD_S, "flood sent")
        ours.drain(1.0)  # let both browsers take the flood in
    pub.send({"op": "unregister", "label": label})
    t0 = pub.wait_for(
        lambda e: e.get("ok") == "unregister" and e["label"] == label, GUARD_S, "unregister"
    )["t_start"]
    ours_s = ours.wait_for(removed(port), GUARD_S, f"{label} removed")["t"] - t0
    floor_s = floor.wait_for(plain("removed", label), GUARD_S, f"{label} removed (plain)")["t"] - t0
    return ours_s, floor_s


def silent_death(procs: list[Proc], host: Host, ours: Proc, floor: Proc) -> tuple[float, float]:
    """Seconds from SIGKILL to the removal of a publisher that announced with a
    ``SILENT_TTL_S`` TTL (at most about that TTL): (source, plain; inf if it never came)."""
    pub = publisher(procs, host)
    register(pub, "doomed", 7999, ttl=SILENT_TTL_S)
    ours.wait_for(added(7999), GUARD_S, "doomed added")
    floor.wait_for(plain("added", "doomed"), GUARD_S, "doomed added (plain)")
    os.kill(pub.popen.pid, signal.SIGKILL)  # `ip netns exec` execs: this is the publisher
    killed = time.monotonic()
    ours_s = ours.wait_for(removed(7999), GUARD_S, "doomed removed")["t"] - killed
    try:
        floor_t = floor.wait_for(plain("removed", "doomed"), GUARD_S, "doomed removed (plain)")
    except AssertionError:  # plain zeroconf may not notice at all: say so, do not guess
        return ours_s, math.inf
    return ours_s, floor_t["t"] - killed


async def _source_cancel_s() -> float:
    config = MdnsSourceConfig(kind="mdns", name="bench", interfaces=("127.0.0.1",))
    send, _recv = trio.open_memory_channel[Event](16)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_mdns_source, config, send)
        start = time.perf_counter()
        nursery.cancel_scope.cancel()
    return time.perf_counter() - start


def _plain_cancel_s() -> float:
    zc = Zeroconf(interfaces=["127.0.0.1"])
    browser_ = ServiceBrowser(zc, ["_isthmus._tcp.local."], handlers=[lambda **_: None])
    start = time.perf_counter()
    browser_.cancel()
    zc.close()
    return time.perf_counter() - start


def cancel_figures(rounds: int) -> tuple[list[float], list[float]]:
    ours = [trio.run(_source_cancel_s) for _ in range(rounds)]
    floor = [_plain_cancel_s() for _ in range(rounds)]
    return ours, floor


def line(what: str, ours: list[float], floor: list[float], bound: float | None = None) -> str:
    o, f = statistics.median(ours), statistics.median(floor)
    if math.isinf(f):
        ratio = f"plain saw nothing within {GUARD_S:g} s"
    else:
        ratio = f"{o / f:5.2f}x plain" if f > 0 else "   n/a"
    to_bound = "" if bound is None else f", {o / bound:.3f}x the {bound:g} s bound"
    return (
        f"{what:<26} source {o * 1000:8.1f} ms  plain {f * 1000:8.1f} ms  "
        f"({ratio}{to_bound}; {len(ours)} rounds, source max {max(ours) * 1000:.1f} ms)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    results: dict[str, tuple[list[float], list[float]]] = {}
    results["cancel"] = cancel_figures(args.rounds)
    reason = netns_skip_reason()
    if reason is not None:
        print(f"multicast parts skipped: {reason}")
    else:
        procs: list[Proc] = []
        with lan(3) as net:
            try:
                pub = publisher(procs, net.hosts[0])
                ours = browser(procs, net.hosts[1])
                floor = plain_browser(procs, net.hosts[2])
                rounds = [
                    goodbye_round(pub, ours, floor, f"web-{i}", 8000 + i)
                    for i in range(args.rounds)
                ]
                results["goodbye"] = ([r[0] for r in rounds], [r[1] for r in rounds])
                # The silent death first: after the flood, zeroconf's cache is full.
                dead = silent_death(procs, net.hosts[0], ours, floor)
                results["silent death (kill)"] = ([dead[0]], [dead[1]])
                after = goodbye_round(pub, ours, floor, "keeper", 7000, flood=True)
                results["goodbye after 10k flood"] = ([after[0]], [after[1]])
            finally:
                for p in procs:
                    p.stop()
    figures = {
        k: {"source_s": v[0], "plain_s": [x if math.isfinite(x) else None for x in v[1]]}
        for k, v in results.items()
    }
    print(json.dumps(figures))
    for what, (ours_s, floor_s) in results.items():
        bound = {"goodbye": 1.0, "goodbye after 10k flood": 1.0}.get(what)
        if what == "silent death (kill)":
            bound = float(SILENT_TTL_S)
        print(line(what, ours_s, floor_s, bound))


if __name__ == "__main__":
    main()
