#!/usr/bin/env python3
"""CPU per request of the balancing decision, every variant in the same run.

Two tables, all variants interleaved in rounds on the same candidates:

* the bare balancer: plain round robin (what the gateway had) vs smooth WRR (the default),
  P2C least request and the hash ring;
* the whole choice as :class:`~gateway.cluster.local.LocalCluster` makes it per request
  (catalog lookup, outlier filter, balancer, outcome recording): WRR with outlier detection
  on and off, round robin in its place (the old path), least request, ring hash.

Prints microseconds of process CPU per request.
Usage: ``.venv/bin/python scripts/bench_lb.py [requests] [endpoints]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import trio

from discovery.catalog import apply
from discovery.events import Resynced
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from discovery.watch import Watch
from gateway.cluster.balancer import BalancerChoice
from gateway.cluster.lb import round_robin
from gateway.cluster.local import LocalCluster
from gateway.cluster.outlier import OutlierPolicy
from gateway.cluster.outlier_detector import OutlierDetector
from gateway.cluster.p2c import p2c
from gateway.cluster.ring import build_ring, hash64, ring_order
from gateway.cluster.wrr import WrrState, smooth_wrr
from gateway.http.exchange import Request
from gateway.upstream.pool import UpstreamPool

SVC = ServiceName("api")


def timed(runs: dict[str, Callable[[], None]], requests: int, rounds: int = 5) -> None:
    totals = dict.fromkeys(runs, 0.0)
    for _ in range(rounds):
        for name, fn in runs.items():
            t0 = time.process_time()
            fn()
            totals[name] += time.process_time() - t0
    for name, total in totals.items():
        print(f"  {name:34s} {total / (rounds * requests) * 1e6:7.2f} us CPU per request")


def bare(eps: tuple[Endpoint, ...], requests: int) -> dict[str, Callable[[], None]]:
    keys = [(e.address, e.port) for e in eps]
    ring = build_ring([f"{a}:{p}" for a, p in keys], [e.weight for e in eps])

    def rr() -> None:
        cursor = 0
        for _ in range(requests):
            _, cursor = round_robin(eps, cursor)

    def wrr() -> None:
        state: WrrState[tuple[str, int]] = WrrState()
        for _ in range(requests):
            _, state = smooth_wrr(
                eps, [(e.address, e.port) for e in eps], [e.weight for e in eps], state
            )

    def least() -> None:
        for i in range(requests):
            p2c(eps, [0] * len(eps), [e.weight for e in eps], i * 7919, i * 104729)

    def hashed() -> None:
        for i in range(requests):
            ring_order(ring, hash64(b"user-%d" % i), 3)

    return {"round_robin": rr, "smooth_wrr": wrr, "p2c least_request": least, "ring_hash": hashed}


def cluster_runs(eps: tuple[Endpoint, ...], requests: int) -> dict[str, Callable[[], None]]:
    snapshot, _ = apply(Catalog(), Resynced("static", eps, "1", 0.0), now=0.0, policy=Policy())
    catalog = Watch(snapshot)

    def make(choice: BalancerChoice, detection: bool) -> LocalCluster:
        policy = OutlierPolicy() if detection else None
        return LocalCluster(
            local_site="here",
            catalog=catalog,
            pool=UpstreamPool(),
            clock=lambda: 1.0,
            outlier=OutlierDetector(lambda _s: policy, clock=lambda: 1.0),
            balancer_for=lambda _s: choice,
        )

    def run(cluster: LocalCluster, headers: tuple[tuple[bytes, bytes], ...] = ()) -> None:
        req = Request(b"GET", b"http", b"api.default.isthmus", b"/", headers)
        for _ in range(requests):
            order, _ = cluster._order(SVC, None, http=True, request=req)
            cluster._record(order[0], "success")

    def old_path() -> None:  # the same lookups with round robin in the balancer's place
        cluster = make(BalancerChoice(), False)
        cursor = 0
        for _ in range(requests):
            found = cluster.endpoints(SVC)
            speaking = tuple(e for e in found if e.protocol in ("http1", "http2"))
            _, cursor = round_robin(speaking, cursor)

    wrr_on = make(BalancerChoice(), True)
    wrr_off = make(BalancerChoice(), False)
    least = make(BalancerChoice("least_request"), True)
    ring = make(BalancerChoice("ring_hash", hash_header=b"x-user"), True)
    return {
        "old: round robin, no detection": old_path,
        "wrr, outlier detection off": lambda: run(wrr_off),
        "wrr, outlier detection on": lambda: run(wrr_on),
        "least_request, detection on": lambda: run(least),
        "ring_hash (header), detection on": lambda: run(ring, ((b"x-user", b"u-1"),)),
    }


async def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    eps = tuple(Endpoint(SVC, "127.0.0.1", 9000 + i, weight=1 + i % 3) for i in range(n))
    print(f"balancer alone ({n} endpoints):")
    timed(bare(eps, requests), requests)
    print(f"whole per-request choice in LocalCluster ({n} endpoints):")
    timed(cluster_runs(eps, requests), requests)


if __name__ == "__main__":
    trio.run(main)
