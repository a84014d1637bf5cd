#!/usr/bin/env python3
"""Benchmark: a WebSocket echo directly, through one gateway and through two, in one run.

Why: WebSocket crosses the overlay as an HTTP/1.1 Upgrade at both ends and an RFC 8441
extended CONNECT on the link; after the handshake it is relayed like an L4 tunnel.  This shows
what each hop costs a real client and server (trio-websocket, on wsproto): round trips per
second for small messages, and MB/s echoed for 64 KiB binary messages.  Two gateway processes
(east, west) run on loopback via the end-to-end harness; the echo servers run in this process,
so the direct figure is the client's and server's own ceiling.  Ratios within one run are
what count: absolute numbers on a shared 2-core machine are noise.

Run:  .venv/bin/python scripts/bench_websocket.py [--small 2000] [--bulk-mib 32]
(needs the ``test`` extra: trio-websocket).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import trio
import trio_websocket

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.demo.topology import DemoService
from tests.e2e.harness import make_topology, open_overlay, routes_of

WS_PORT = 18095
HTTP_PORT = 15080
BLOCK = b"\xab" * 65536


async def echo(request: trio_websocket.WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except trio_websocket.ConnectionClosed:
        pass


async def measure(host: str, port: int, authority: str, small: int, bulk: int) -> str:
    async with trio.open_nursery() as nursery:
        stream = await trio.open_tcp_stream(host, port)
        ws = await trio_websocket.wrap_client_stream(
            nursery, stream, authority, "/", max_message_size=1 << 20
        )
        start = time.perf_counter()
        for _ in range(small):
            await ws.send_message(b"x" * 32)
            await ws.get_message()
        rtts = small / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(bulk):
            await ws.send_message(BLOCK)
            await ws.get_message()
        mbps = 2 * bulk * len(BLOCK) / (time.perf_counter() - start) / 1e6
        await ws.aclose()
        nursery.cancel_scope.cancel()
    return f"{rtts:8.0f} round trips/s (32 B)  {mbps:7.1f} MB/s echoed (64 KiB messages)"


async def main(small: int, bulk: int) -> None:
    services = {site: (DemoService("ws", "http", WS_PORT),) for site in ("east", "west")}
    with tempfile.TemporaryDirectory() as root:
        async with open_overlay(Path(root), make_topology(["east", "west"], services)) as ov:
            addr = {site: str(ov.built[site].site.address) for site in services}
            async with trio.open_nursery() as nursery:
                for site in services:
                    await nursery.start(
                        partial(
                            trio_websocket.serve_websocket,
                            echo,
                            addr[site],
                            WS_PORT,
                            None,
                            handler_nursery=nursery,
                        )
                    )
                both = ["east", "west"]
                await ov.wait(
                    "east", "/routes", lambda d: routes_of(d, "ws.default.isthmus") == both
                )
                for name, host, port, authority in (
                    ("direct", addr["west"], WS_PORT, "ws"),
                    ("1 gateway (same site)", addr["east"], HTTP_PORT, "ws.default.east.isthmus"),
                    ("2 gateways (cross-site)", addr["east"], HTTP_PORT, "ws.default.west.isthmus"),
                ):
                    print(f"{name:24s} {await measure(host, port, authority, small, bulk)}")
                nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small", type=int, default=2000, help="small round trips")
    parser.add_argument("--bulk-mib", type=int, default=32, help="MiB sent (and echoed back)")
    args = parser.parse_args()
    trio.run(main, args.small, max(1, args.bulk_mib * 16))
