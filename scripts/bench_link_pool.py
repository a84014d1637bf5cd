#!/usr/bin/env python3
"""Benchmark: a peer's link pool against a single link, in the same run.

Two Peerings (east dials west) over in-memory links: real HTTP/2, reverse connections and
federation, no sockets or TLS (tests/overlay/peering/memory_links.py).  West's links take
``--slots`` streams each.  Two loads, each run with ``link_max_per_peer`` 1 (one link, today's
behaviour before the pool) and 4 (the pool), alternating in rounds:

* **unsaturated** -- ``--requests`` short exchanges (open a stream, west answers 200 at once,
  close), ``--concurrency`` at a time, nothing else on the link: the pool's cost per request
  (picking a link) against opening on the one connection directly;
* **saturated** -- the same, while ``--held`` idle tunnels fill one link's slots but for a
  few: on one link the requests queue for those few slots; the pool opens extra links.

Reported: CPU microseconds per request (``time.process_time``), wall-clock requests per
second (noisy on a shared machine: compare within a run only), requests that got no slot
within ``--timeout`` seconds, and the links the peer ended with.

Run:  .venv/bin/python scripts/bench_link_pool.py [--requests 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from dataclasses import dataclass
from typing import Any, cast

import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from discovery.watch import Watch
from foundation.spiffe_id import SpiffeId
from overlay.federation.config import ExportConfig
from overlay.h2.limits import H2Limits
from overlay.h2.stream import H2Stream
from overlay.peering.config import PeeringSettings, PeerSpec
from overlay.peering.link_pool import pick
from overlay.peering.peers import Peering
from overlay.peering.pool import PeerPool
from tests.overlay.identity.cases import SERVER_CHAIN, SERVER_KEY, TRUSTED
from tests.overlay.identity.certfactory import identity
from tests.overlay.peering.memory_links import MemoryNetwork
from tests.overlay.peering.test_peering import catalog_with_api

EAST_ID = SpiffeId.parse("spiffe://a.test/gateway/east")
WEST_ID = SpiffeId.parse("spiffe://a.test/gateway/west")
TUNNEL = [(b":method", b"CONNECT"), (b":authority", b"api.default:80")]
DECIDE_OPS = 20_000
REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":path", b"/"), (b":authority", b"a")]


@dataclass
class Result:
    cpu_us: float
    per_s: float
    timed_out: int
    links: int
    decide_us: float  # the pool's choice alone (read the loads, pick, maybe ask for a link)


async def _west_handler(site: str, stream: H2Stream) -> None:
    if dict(stream.request_headers).get(b":method") == b"CONNECT":
        await stream.send_headers([(b":status", b"200")])
        while await stream.receive_some(1024):
            pass
        return
    await stream.send_headers([(b":status", b"200")], end_stream=True)


async def _run(max_links: int, args: argparse.Namespace, held: int) -> Result:
    ident = identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED))
    async with trio.open_nursery() as nursery:
        network = MemoryNetwork(nursery)
        east = Peering(
            local_site="east",
            identity=ident,
            peers=[PeerSpec("west", "west.test", 1, WEST_ID)],
            catalog=Watch(catalog_with_api()),
            export_rules=[ExportConfig()],
            settings=PeeringSettings(ping_interval=60.0, max_links_per_peer=max_links),
            dial=cast(Any, network.dialer(EAST_ID)),
        )
        west = Peering(
            local_site="west",
            identity=ident,
            peers=[PeerSpec("east", "east.test", 1, EAST_ID, dial=False)],
            catalog=Watch(catalog_with_api()),
            export_rules=[ExportConfig()],
            settings=PeeringSettings(
                ping_interval=60.0,
                h2_limits=H2Limits(max_concurrent_streams=args.slots),
            ),
            stream_handler=_west_handler,
        )
        network.add("west.test", west, WEST_ID)
        network.add("east.test", east, EAST_ID)
        nursery.start_soon(east.run)
        nursery.start_soon(west.run)
        with trio.fail_after(10):
            while east.outbound("west") is None:  # noqa: ASYNC110 -- a bench's start-up
                await trio.sleep(0.01)
        tunnels: list[H2Stream] = []
        for _ in range(held):
            conn = east.outbound("west")
            assert conn is not None
            stream = await conn.open_stream(TUNNEL)
            await stream.response_headers()
            tunnels.append(stream)
        queue = iter(range(args.requests))
        timed_out = [0]

        async def worker() -> None:
            for _ in queue:
                with trio.move_on_after(args.timeout) as scope:
                    conn = east.outbound("west")
                    assert conn is not None
                    stream = await conn.open_stream(REQUEST, end_stream=True)
                    await stream.response_headers()
                    await stream.aclose()
                if scope.cancelled_caught:
                    timed_out[0] += 1

        pool = east.outbound("west")
        decide_us = 0.0
        if isinstance(pool, PeerPool):
            start = time.process_time()
            for _ in range(DECIDE_OPS):
                _links, loads = pool.loads()
                pick(loads)
                pool.note_load(loads)
            decide_us = (time.process_time() - start) / DECIDE_OPS * 1e6
        cpu, wall = time.process_time(), time.perf_counter()
        async with trio.open_nursery() as workers:
            for _ in range(args.concurrency):
                workers.start_soon(worker)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        links = len(east.status()["west"]["links"])
        for stream in tunnels:
            await stream.aclose()
        nursery.cancel_scope.cancel()
    return Result(cpu / args.requests * 1e6, args.requests / wall, timed_out[0], links, decide_us)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--slots", type=int, default=32, help="west's streams per link (32)")
    parser.add_argument("--held", type=int, default=28, help="idle tunnels when saturated")
    parser.add_argument("--timeout", type=float, default=2.0, help="per request (2 s)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    for load, held in (("unsaturated", 0), ("saturated", args.held)):
        results: dict[int, list[Result]] = {1: [], 4: []}
        for _ in range(args.rounds):
            for max_links in (1, 4):
                results[max_links].append(trio.run(_run, max_links, args, held))
        for max_links, rs in results.items():
            print(
                f"{load:11} link_max_per_peer={max_links}: "
                f"CPU {statistics.median(r.cpu_us for r in rs):6.1f} us/request, "
                f"{statistics.median(r.per_s for r in rs):7.0f} requests/s, "
                f"timed out {max(r.timed_out for r in rs)}, links {max(r.links for r in rs)}"
            )
        one = statistics.median(r.cpu_us for r in results[1])
        four = statistics.median(r.cpu_us for r in results[4])
        decide = statistics.median(r.decide_us for r in results[4])
        print(
            f"{load:11} CPU ratio pool/single {four / one:.2f}; "
            f"the pool's choice alone: {decide:.1f} us per stream"
        )


if __name__ == "__main__":
    main()
