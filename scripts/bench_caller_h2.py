#!/usr/bin/env python3
"""Benchmark: the gateway's CPU per h2c caller request, callers' HTTP/2 on lean against h2.

Why: ``[limits] caller_h2_engine`` picks the HTTP/2 state machine of callers' connections.
This measures what it changes, the caller-facing connection, with nothing else in the count:
the gateway side (a server-role ``H2Connection`` built by the listener's own ``h2_limits``
from ``LimitsConfig(caller_h2_engine=...)``, answering each request with a short body) runs
in THIS process and only its CPU is counted (``time.process_time``); the caller (an h2c
client on python-hyper h2, the same for both engines: a caller's stack is not ours) runs in a
child process over TCP on 127.0.0.1.  Requests are shaped like a caller's (pseudo-headers, a
few fields that repeat, a request id that does not), ``--concurrency`` at a time.  The
engines run in alternating slices so drift on a shared machine hits both alike; the result
is microseconds of gateway CPU per request for each and the ratio lean / h2.  Routing,
endpoint and access-log work (the same on both engines) is not in it.

Run:  .venv/bin/python scripts/bench_caller_h2.py [--requests 3000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.config.model import LimitsConfig
from gateway.listener.h2 import h2_limits
from overlay.h2.connection import H2Connection
from overlay.h2.limits import EngineName, H2Limits
from overlay.h2.stream import H2Stream

BODY = b'{"ok": true, "site": "aws-east"}\n'
CLIENT_TIMEOUT_S = 120.0  # hang guard of one slice


def _request(i: int) -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":path", b"/api/v1/items?page=%d" % (i % 10)),
        (b":authority", b"api.payments.isthmus"),
        (b"user-agent", b"grpc-go/1.60"),
        (b"accept", b"application/json"),
        (b"x-request-id", b"%032x" % i),
    ]


async def _answer(stream: H2Stream) -> None:
    await stream.send_response([(b":status", b"200"), (b"content-type", b"text/json")], BODY)


async def _client(port: int, requests: int, concurrency: int) -> None:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    client = H2Connection(tcp, client_side=True, limits=H2Limits(engine="h2"), ping_interval=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        per_worker = requests // concurrency

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
        await client.aclose()
        nursery.cancel_scope.cancel()


async def _slice(engine: EngineName, requests: int, concurrency: int) -> float:
    """Gateway CPU seconds per request for one caller connection of ``requests``."""
    limits = h2_limits(LimitsConfig(caller_h2_engine=engine))
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    child = await trio.lowlevel.open_process(
        [sys.executable, __file__, "--client", str(port), str(requests), str(concurrency)]
    )
    try:
        with trio.fail_after(CLIENT_TIMEOUT_S):
            tcp = await listener.accept()
            start = time.process_time()
            conn = H2Connection(
                tcp, client_side=False, handler=_answer, limits=limits, ping_interval=None
            )
            assert conn.engine_name == engine
            await conn.serve()
            used = time.process_time() - start
    finally:
        await listener.aclose()
        with trio.fail_after(CLIENT_TIMEOUT_S):
            await child.wait()
    if child.returncode != 0:
        raise SystemExit(f"client failed ({child.returncode})")
    return used / (requests // concurrency * concurrency)


def main() -> int:
    if sys.argv[1:2] == ["--client"]:
        port, requests, concurrency = (int(v) for v in sys.argv[2:5])
        trio.run(_client, port, requests, concurrency)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=3000, help="per slice (3000)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--concurrency", type=int, default=10, help="streams at a time (10)")
    args = parser.parse_args()
    if not (1 <= args.rounds <= 20 and 100 <= args.requests <= 100_000):
        parser.error("--rounds must be 1..20 and --requests 100..100000")
    if not 1 <= args.concurrency <= 100:  # the callers' default stream cap is 100
        parser.error("--concurrency must be 1..100")
    samples: dict[str, list[float]] = {"h2": [], "lean": []}
    engine: EngineName
    for _ in range(args.rounds):
        for engine in ("h2", "lean"):
            samples[engine].append(trio.run(_slice, engine, args.requests, args.concurrency) * 1e6)
    h2_us, lean_us = statistics.median(samples["h2"]), statistics.median(samples["lean"])
    rounded = {k: [round(v, 1) for v in vs] for k, vs in samples.items()}
    print(f"h2   {h2_us:7.1f} us gateway CPU per caller request  {rounded['h2']}")
    print(f"lean {lean_us:7.1f} us gateway CPU per caller request  {rounded['lean']}")
    print(f"lean / h2 = {lean_us / h2_us:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
