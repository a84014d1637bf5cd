#!/usr/bin/env python3
"""Benchmark: CPU per small exchange across an HTTP/2 link, lean engine against h2.

Why: ``bench_dataplane.py`` measures whole gateways (four processes on two shared cores), where
a change of the link's HTTP/2 cost is a fraction of a noisy figure.  This measures the link
alone, in ONE process (so CPU time is both ends' cost), over a ``socket.socketpair()``: a
client-role ``H2Connection`` sends requests shaped like the ones a gateway forwards (the
pseudo-headers, a dozen fields of which most repeat, a request id and deadline that do not),
the server-role one answers each with ``send_response`` (a short body), ``--concurrency``
workers at a time, with the links' limits.  The engines run in alternating slices so that
drift on a shared machine hits both alike; the result is microseconds of CPU per exchange
for each and the ratio lean / h2.

Run:  .venv/bin/python scripts/bench_link_exchange.py [--exchanges 4000] [--rounds 3]
      [--profile lean]   (cProfile of one engine's slices, hottest functions)
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import socket
import statistics
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overlay.h2.connection import H2Connection
from overlay.h2.limits import EngineName, H2Limits
from overlay.h2.stream import H2Stream

LIMITS = H2Limits(
    max_concurrent_streams=1000,
    stream_window=1 << 20,
    connection_window=8 << 20,
    max_frame_size=64 * 1024,
    max_outbound_buffer=1 << 20,
    read_size=256 * 1024,
    enable_connect_protocol=True,
    count_peer_resets=False,
)
BODY = b"hello from the other site\n"


def _request(i: int) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"https"),
        (b":path", b"/api/v1/items"),
        (b":authority", b"api.payments.isthmus"),
        (b"user-agent", b"wrk"),
        (b"accept", b"*/*"),
        (b"isthmus-caller-id", b"spiffe://east.example/ns/payments/sa/web"),
        (b"isthmus-origin-site", b"aws-east"),
        (b"x-request-id", b"%032x" % i),
        (b"x-isthmus-deadline-ms", b"%d" % (15000 - i % 7)),
    ]


def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    return (
        trio.SocketStream(trio.socket.from_stdlib_socket(a)),
        trio.SocketStream(trio.socket.from_stdlib_socket(b)),
    )


async def _answer(stream: H2Stream) -> None:
    await stream.send_response([(b":status", b"200"), (b"content-type", b"text/plain")], BODY)


async def _slice(engine: EngineName, exchanges: int, concurrency: int) -> float:
    """CPU seconds for ``exchanges`` request/response pairs on a fresh link."""
    limits = H2Limits(**{**_fields(LIMITS), "engine": engine})
    a, b = _pair()
    client = H2Connection(a, client_side=True, limits=limits, ping_interval=None)
    server = H2Connection(
        b, client_side=False, handler=_answer, limits=limits, ping_interval=None
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        per_worker = exchanges // concurrency
        start = time.process_time()

        async def worker(w: int) -> None:
            for i in range(per_worker):
                stream = await client.open_stream(_request(w * per_worker + i), end_stream=True)
                await stream.response_headers()
                while await stream.receive_some():
                    pass
                await stream.aclose()

        async with trio.open_nursery() as workers:
            for w in range(concurrency):
                workers.start_soon(worker, w)
        used = time.process_time() - start
        await client.aclose()
        await server.aclose()
    return used / (per_worker * concurrency)


def _fields(limits: H2Limits) -> dict[str, object]:
    return {name: getattr(limits, name) for name in limits.__dataclass_fields__}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchanges", type=int, default=4000, help="per slice (4000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--concurrency", type=int, default=16, help="workers (16)")
    parser.add_argument("--profile", choices=["lean", "h2"], help="profile this engine's slices")
    args = parser.parse_args()
    if not (1 <= args.rounds <= 20 and 100 <= args.exchanges <= 100_000):
        parser.error("--rounds must be 1..20 and --exchanges 100..100000")
    if not 1 <= args.concurrency <= 500:
        parser.error("--concurrency must be 1..500")
    samples: dict[str, list[float]] = {"h2": [], "lean": []}
    profiler = cProfile.Profile()
    engine: EngineName
    for _ in range(args.rounds):
        for engine in ("h2", "lean"):
            if engine == args.profile:
                profiler.enable()
            cost = trio.run(_slice, engine, args.exchanges, args.concurrency)
            if engine == args.profile:
                profiler.disable()
            samples[engine].append(cost * 1e6)
    h2_us, lean_us = statistics.median(samples["h2"]), statistics.median(samples["lean"])
    print(f"h2   {h2_us:7.1f} us CPU per exchange (both ends)  {samples['h2']}")
    print(f"lean {lean_us:7.1f} us CPU per exchange (both ends)  {samples['lean']}")
    print(f"lean / h2 = {lean_us / h2_us:.2f}")
    if args.profile:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
