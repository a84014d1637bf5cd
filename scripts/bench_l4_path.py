#!/usr/bin/env python3
"""Benchmark: CPU per MB of one L4 tunnel through two gateways' data path, against the floor.

Why: ``bench_dataplane.py``'s L4 bulk figure runs four processes on a shared 2-core machine;
its MB/s moves with the other load.  This puts the whole bulk path of the two gateways in ONE
process, so its CPU time is the cost of both ends and nothing else, over socketpairs:

* ``floor``: TCP -> relay -> mTLS (``TLSStream``) -> relay -> TCP, each relay copying at most
  ``--unit`` bytes at a time: the trio mTLS relay pair of ``bench_dataplane`` (``floor_l4.py``);
* ``tunnel``: TCP -> ``relay.splice`` -> CONNECT stream of a client-role ``H2Connection`` (the
  lean engine, the links' limits of ``gateway.app.peering_settings``) over ``TLSStream`` ->
  the server-role connection's stream -> ``relay.splice`` -> TCP, as the two gateways do.

``--direction up`` sends from the client-role side (the dialing gateway's caller towards the
peer's endpoint), ``down`` the other way.  The two shapes alternate in slices, so drift hits
both alike; the result is MB per CPU-second of each and tunnel / floor (the L4 target is
>= 0.9).  ``--profile tunnel|floor`` prints that shape's hottest functions instead (cProfile;
its figures are not results).

Run:  .venv/bin/python scripts/bench_l4_path.py [--direction up|down|both] [--mib 256]
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import socket
import ssl
import statistics
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import trio
import trustme

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.app import peering_settings
from gateway.config.model import LimitsConfig, PeeringConfig
from gateway.relay import splice
from overlay.h2.connection import H2Connection
from overlay.h2.stream import H2Stream
from overlay.link.tls_stream import TLSStream

MIB = 1 << 20
SEND_CHUNK = 128 * 1024  # what the source writes at a time (iperf3 writes 128 KiB)


def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    return (
        trio.SocketStream(trio.socket.from_stdlib_socket(a)),
        trio.SocketStream(trio.socket.from_stdlib_socket(b)),
    )


def _contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    for ctx in (server, client):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.verify_mode = ssl.CERT_REQUIRED
        ca.configure_trust(ctx)
    client.check_hostname = False
    ca.issue_cert("server.test").configure_cert(server)
    ca.issue_cert("client.test").configure_cert(client)
    server.set_alpn_protocols(["h2"])
    client.set_alpn_protocols(["h2"])
    return client, server


async def _source(stream: trio.abc.SendStream, total: int) -> None:
    block = b"x" * SEND_CHUNK
    sent = 0
    while sent < total:
        n = min(SEND_CHUNK, total - sent)
        await stream.send_all(block[:n] if n < SEND_CHUNK else block)
        sent += n
    await stream.aclose()


async def _sink(stream: trio.abc.ReceiveStream, total: int) -> None:
    got = 0
    while got < total:
        data = await stream.receive_some(256 * 1024)
        if not data:
            raise RuntimeError(f"sink: EOF after {got} of {total} bytes")
        got += len(data)


async def _tls_pair(
    ctxs: tuple[ssl.SSLContext, ssl.SSLContext],
) -> tuple[TLSStream[trio.SocketStream], TLSStream[trio.SocketStream]]:
    a, b = _pair()
    client = TLSStream(a, ctxs[0], server_hostname="server.test")
    server = TLSStream(b, ctxs[1], server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client.do_handshake)
        nursery.start_soon(server.do_handshake)
    return client, server


async def _copy(src: trio.abc.ReceiveStream, dst: trio.abc.SendStream, unit: int) -> None:
    while data := await src.receive_some(unit):
        await dst.send_all(data)


async def floor(total: int, unit: int, up: bool, ctxs: tuple[ssl.SSLContext, ...]) -> None:
    near_in, caller = _pair()  # the caller's connection to the near relay
    far_out, endpoint = _pair()  # the far relay's connection to the endpoint
    tls_near, tls_far = await _tls_pair((ctxs[0], ctxs[1]))
    async with trio.open_nursery() as nursery:
        if up:
            nursery.start_soon(_source, caller, total)
            nursery.start_soon(_copy, near_in, tls_near, unit)
            nursery.start_soon(_copy, tls_far, far_out, unit)
            await _sink(endpoint, total)
        else:
            nursery.start_soon(_source, endpoint, total)
            nursery.start_soon(_copy, far_out, tls_far, unit)
            nursery.start_soon(_copy, tls_near, near_in, unit)
            await _sink(caller, total)
        nursery.cancel_scope.cancel()


async def tunnel(total: int, unit: int, up: bool, ctxs: tuple[ssl.SSLContext, ...]) -> None:
    config = SimpleNamespace(peering=PeeringConfig(), limits=LimitsConfig())
    limits = peering_settings(config).h2_limits  # type: ignore[arg-type]
    near_in, caller = _pair()
    far_out, endpoint = _pair()
    tls_near, tls_far = await _tls_pair((ctxs[0], ctxs[1]))

    async def handler(stream: H2Stream) -> None:
        await stream.send_headers([(":status", "200")])
        await splice(stream, far_out, read_size=unit)

    client = H2Connection(tls_near, client_side=True, limits=limits, ping_interval=None)
    server = H2Connection(
        tls_far, client_side=False, handler=handler, limits=limits, ping_interval=None
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        stream = await client.open_stream(
            [(":method", "CONNECT"), (":authority", "endpoint.test:1")]
        )
        await stream.response_headers()
        nursery.start_soon(lambda: splice(near_in, stream, read_size=unit))
        if up:
            nursery.start_soon(_source, caller, total)
            await _sink(endpoint, total)
        else:
            nursery.start_soon(_source, endpoint, total)
            await _sink(caller, total)
        nursery.cancel_scope.cancel()


def _cpu(fn: object, *args: object) -> float:
    start = time.process_time()
    trio.run(fn, *args)  # type: ignore[arg-type]
    return time.process_time() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--direction", choices=("up", "down", "both"), default="both")
    parser.add_argument("--mib", type=int, default=256, help="MiB per slice (256)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--unit", type=int, default=LimitsConfig().tunnel_buffer_bytes)
    parser.add_argument(
        "--profile", choices=("tunnel", "floor"), help="profile one shape instead (cProfile)"
    )
    args = parser.parse_args()
    if not 1 <= args.mib <= 4096 or not 1 <= args.rounds <= 20:
        parser.error("--mib must be 1..4096 and --rounds 1..20")
    ctxs = _contexts()
    total = args.mib * MIB
    directions = ("up", "down") if args.direction == "both" else (args.direction,)
    for direction in directions:
        up = direction == "up"
        if args.profile:
            prof = cProfile.Profile()
            prof.enable()
            trio.run(tunnel if args.profile == "tunnel" else floor, total, args.unit, up, ctxs)
            prof.disable()
            out = io.StringIO()
            pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(30)
            print(f"-- {args.profile} {direction}, profile (tottime)\n{out.getvalue()}")
            continue
        floors, tunnels = [], []
        for _ in range(args.rounds):
            floors.append(total / MIB / _cpu(floor, total, args.unit, up, ctxs))
            tunnels.append(total / MIB / _cpu(tunnel, total, args.unit, up, ctxs))
        f, t = statistics.median(floors), statistics.median(tunnels)
        print(
            f"{direction:4}: floor {f:7.1f} MiB/CPU-s, tunnel {t:7.1f} MiB/CPU-s, "
            f"tunnel/floor {t / f:.2f}  (unit {args.unit}, {args.rounds} x {args.mib} MiB)",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
