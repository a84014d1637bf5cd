#!/usr/bin/env python3
"""Client CPU per Consul read with kept-alive connections vs a fresh connection each, same run.

The Consul source's HTTP client (``discovery.sources.consul_http.TrioHTTPClient``) keeps its
connections to the agent alive; before, every answer cost a connect, a close and, with
``https``, a TLS handshake.  This measures what that saves: ``--requests`` sequential GETs of
``/v1/health/service/web`` (a service of ``--instances`` instances) against the Consul-API
test server (``tests.consul_api.server``, real sockets on 127.0.0.1), once through the client
as it is (``reuse``) and once with a pool that keeps nothing (``fresh``: a new connection per
request, closed after it), over plain HTTP and over TLS, rounds interleaved.

The server runs in its own thread with its own trio loop; the figure is the client thread's
CPU time (``time.thread_time``) per request, so the server's work is not counted.  The
callback only takes the status: py-consul's JSON decoding is the same in both modes (and a
large body's runs in a worker thread, see ``discovery.offload``).

Run:  .venv/bin/python scripts/bench_consul_http.py [--requests 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import ssl
import statistics
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio
import trustme

from discovery.sources.consul_http import TrioHTTPClient
from discovery.sources.consul_pool import IdlePool
from tests.consul_api.server import ConsulApiServer

GUARD_S = 120.0  # the whole measurement; longer is a hang, not a figure


def start_server(instances: int, context: ssl.SSLContext | None) -> int:
    """A Consul-API test server in a daemon thread; returns its port."""
    server = ConsulApiServer(ssl_context=context)
    for number in range(instances):
        server.register_service("web", 20000 + number, node=f"node-{number % 50}")
    ready = threading.Event()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.serve, "127.0.0.1", 0)
            ready.set()

    threading.Thread(target=trio.run, args=(main,), daemon=True).start()
    if not ready.wait(30):
        raise SystemExit("the test server did not start")
    return server.port


async def cpu_per_request(client: TrioHTTPClient, requests: int) -> float:
    """Client-thread CPU seconds per GET over ``requests`` sequential GETs."""
    start = time.thread_time()
    for _ in range(requests):
        code = await client.get(lambda response: response.code, "/v1/health/service/web")
        assert code == 200
    return (time.thread_time() - start) / requests


async def measure(args: argparse.Namespace) -> None:
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    ports = {
        "http": start_server(args.instances, None),
        "https": start_server(args.instances, server_context),
    }
    with trio.fail_after(GUARD_S):
        for scheme, port in ports.items():
            context = client_context if scheme == "https" else None
            figures: dict[str, list[float]] = {"reuse": [], "fresh": []}
            for _ in range(args.rounds):
                for mode in figures:
                    client = TrioHTTPClient("127.0.0.1", port, scheme, ssl_context=context)
                    if mode == "fresh":
                        client.pool = IdlePool(0)  # keeps nothing: each request connects anew
                    await cpu_per_request(client, 5)  # warm-up (and the kept connection)
                    figures[mode].append(await cpu_per_request(client, args.requests))
                    await client.close()
            reuse = statistics.median(figures["reuse"])
            fresh = statistics.median(figures["fresh"])
            print(
                f"{scheme:5}  reuse {reuse * 1e6:7.0f} us/req  fresh {fresh * 1e6:7.0f} us/req"
                f"  fresh/reuse {fresh / reuse:.2f}x  (median of {args.rounds} rounds"
                f" of {args.requests} GETs, {args.instances} instances)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--instances", type=int, default=200)
    trio.run(measure, parser.parse_args())


if __name__ == "__main__":
    main()
