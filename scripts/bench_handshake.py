#!/usr/bin/env python3
"""Benchmark: full mTLS link handshakes/s with the SPIFFE verification vs OpenSSL's check only.

Both modes run in ONE process and ONE run, on 127.0.0.1, with the same certificates (two dev CAs,
two trust domains, both trusted by both sides) and the same ``ssl.SSLContext`` objects:

* ``openssl``: TCP connect, TLS 1.3 handshake over the same ``TLSStream`` links use (OpenSSL
  verifies against the pooled anchors),
  the server sends one byte once its side is done, the client reads it, both close.
* ``full``: the same, through ``open_link``/``serve_links``: plus ALPN check, chain extraction,
  the OpenSSL root checked against the peer's own trust domain's bundle, X509-SVID rules and
  the per-trust-domain re-verification with cryptography (memoised per chain and identity
  state, as deployed: gateways reconnect with the same SVID), exact-ID authorization on the
  dialer, ``authorize()`` on the acceptor, and the live-link registry;
* ``full_cold``: ``full`` with the memo disabled, so every handshake runs every check.

The modes alternate in short slices so that drift (CPU frequency, other load) hits both alike.
Client and server share the process, so a handshake's cost is both ends' CPU.
Reports handshakes/s of each and the overhead of the full verification (target: <= 15%).

Run:  .venv/bin/python scripts/bench_handshake.py [--seconds 20] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from foundation.spiffe_id import SpiffeId, TrustDomain
from overlay.identity.ca import init_ca, issue_svid
from overlay.identity.rotation import Identity
from overlay.identity.state import BundleSource, load_identity_state
from overlay.identity.verify import VerifyCache
from overlay.link.accept import serve_links
from overlay.link.dial import open_link
from overlay.link.link import CLOSE_TIMEOUT_S, Link
from overlay.link.tls_stream import TLSStream

SERVER_ID = SpiffeId.parse("spiffe://east.bench/gateway/east")
CLIENT_ID = SpiffeId.parse("spiffe://west.bench/gateway/west")
TIMEOUT = 10.0


def make_identities(root: Path) -> tuple[Identity, Identity]:
    east = init_ca(root / "ca-east", TrustDomain("east.bench"))
    west = init_ca(root / "ca-west", TrustDomain("west.bench"))
    bundles = [BundleSource(east.trust_domain, east.bundle_path)]
    bundles.append(BundleSource(west.trust_domain, west.bundle_path))
    out = []
    for ca, sid in ((east, SERVER_ID), (west, CLIENT_ID)):
        p = issue_svid(ca.directory, sid, root / sid.trust_domain.name, dt.timedelta(hours=1))
        out.append(Identity(load_identity_state(p.svid, p.key, bundles)))
    return out[0], out[1]


async def openssl_server(identity: Identity, *, task_status: trio.TaskStatus[int]) -> None:
    async def handle(tcp: trio.SocketStream) -> None:
        stream = TLSStream(tcp, identity.state.server_ctx, server_side=True)
        try:
            with trio.fail_after(TIMEOUT):
                await stream.do_handshake()
                await stream.send_all(b"k")
        except trio.BrokenResourceError:
            pass
        finally:  # close exactly as Link.aclose does, so only the verification differs
            with (
                trio.move_on_after(CLOSE_TIMEOUT_S),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError),
            ):
                await stream.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        task_status.started(listeners[0].socket.getsockname()[1])


async def openssl_dial(port: int, identity: Identity) -> None:
    tcp = await trio.open_tcp_stream("127.0.0.1", port)
    stream = TLSStream(tcp, identity.state.client_ctx, server_hostname=None)
    try:
        with trio.fail_after(TIMEOUT):
            await stream.do_handshake()
            if await stream.receive_some(1) != b"k":
                raise RuntimeError("server did not confirm")
    finally:
        await trio.aclose_forcefully(stream)


async def full_server(identity: Identity, *, task_status: trio.TaskStatus[int]) -> None:
    async def handler(link: Link) -> None:
        await link.stream.send_all(b"k")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(
                serve_links,
                handler,
                host="127.0.0.1",
                port=0,
                identity=identity,
                authorize=lambda sid: sid == CLIENT_ID,
            )
        )
        task_status.started(listeners[0].socket.getsockname()[1])


async def full_dial(port: int, identity: Identity) -> None:
    link = await open_link("127.0.0.1", port, identity=identity, expected=SERVER_ID)
    try:
        with trio.fail_after(TIMEOUT):
            if await link.stream.receive_some(1) != b"k":
                raise RuntimeError("server did not confirm")
    finally:
        await trio.aclose_forcefully(link.stream)
        identity.unregister(link)


async def run_slice(dial: Callable[[], Awaitable[None]], seconds: float, concurrency: int) -> int:
    done = 0
    deadline = trio.current_time() + seconds

    async def worker() -> None:
        nonlocal done
        while trio.current_time() < deadline:
            await dial()
            done += 1

    async with trio.open_nursery() as nursery:
        for _ in range(concurrency):
            nursery.start_soon(worker)
    return done


async def main_async(seconds: float, concurrency: int, slices: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        server_identity, client_identity = make_identities(Path(tmp))
        async with trio.open_nursery() as nursery:
            port_openssl = await nursery.start(openssl_server, server_identity)
            port_full = await nursery.start(full_server, server_identity)
            cold_server, cold_client = (
                Identity(replace(i.state, verify_cache=VerifyCache(max_entries=0)))
                for i in (server_identity, client_identity)
            )
            port_cold = await nursery.start(full_server, cold_server)
            modes = {
                "openssl": partial(openssl_dial, port_openssl, client_identity),
                "full": partial(full_dial, port_full, client_identity),
                "full_cold": partial(full_dial, port_cold, cold_client),
            }
            for dial in modes.values():  # warm-up, not counted
                await run_slice(dial, 0.3, concurrency)
            counts = dict.fromkeys(modes, 0)
            elapsed = dict.fromkeys(modes, 0.0)
            slice_s = seconds / (len(modes) * slices)
            for i in range(slices):
                order = list(modes) if i % 2 == 0 else list(reversed(modes))
                for name in order:
                    t0 = time.perf_counter()
                    counts[name] += await run_slice(modes[name], slice_s, concurrency)
                    elapsed[name] += time.perf_counter() - t0
            nursery.cancel_scope.cancel()
    rate = {m: counts[m] / elapsed[m] for m in modes}
    print(f"mTLS handshakes, TLS 1.3, ECDSA P-256, concurrency {concurrency}, {seconds:.0f} s:")
    labels = {
        "openssl": "OpenSSL check only",
        "full": "full verification (memoised 2nd check, as deployed)",
        "full_cold": "full verification, every check every time (no memo)",
    }
    for m, label in labels.items():
        print(f"  {label:54s}: {rate[m]:7.1f} handshakes/s ({counts[m]})")
    for m in ("full", "full_cold"):
        overhead = rate["openssl"] / rate[m] - 1.0
        extra_us = (1 / rate[m] - 1 / rate["openssl"]) * 1e6
        print(
            f"  overhead of {m:9s}: {overhead * 100:+5.1f}% (target <= 15%), "
            f"{extra_us:5.0f} us more per handshake (both ends)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="total measured time")
    parser.add_argument("--concurrency", type=int, default=8, help="dialing tasks per mode")
    parser.add_argument("--slices", type=int, default=10, help="alternations per mode")
    args = parser.parse_args()
    trio.run(main_async, args.seconds, args.concurrency, args.slices)
    return 0


if __name__ == "__main__":
    sys.exit(main())
