#!/usr/bin/env python3
"""What sorting an east-west connection costs a worker: accept alone, accept + ClientHello peek,
accept + peek + hand-off of the fd to a receiver (SCM_RIGHTS over a Unix datagram socketpair).

One process, real loopback TCP, a real OpenSSL ClientHello without SNI (a peer supervisor's
hello: it is handed off).  Reports process CPU per connection (client side included, the same
in every mode, so the differences are the peek's and the hand-off's cost), never wall time.
Compare with a link's mTLS handshake (~345/s with both ends in one process, ~2.9 ms of CPU:
scripts/bench_handshake.py): links are long-lived, so this is paid once per link.

Run:  .venv/bin/python scripts/bench_handoff.py [--connections N]
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import socket
import ssl
import sys
from functools import partial
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overlay.link.handoff import is_worker_link, receive_handoffs, worker_handoff
from overlay.link.listen import open_listeners

MODES = ("accept", "peek", "handoff")


def client_hello() -> bytes:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=None)
    with contextlib.suppress(ssl.SSLWantReadError):  # it waits for the server: hello is out
        tls.do_handshake()
    return out.read()


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run(mode: str, connections: int, hello: bytes) -> float:
    """CPU seconds per connection in ``mode``."""
    worker_end, supervisor_end = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    done = trio.Semaphore(0)
    hook = worker_handoff(worker_end, timeout_s=5)

    async def received(tcp: trio.SocketStream) -> None:
        done.release()

    async def one(tcp: trio.SocketStream) -> None:
        if mode == "handoff":
            await hook(tcp.socket)  # released by the receiver
            return
        if mode == "peek":
            await is_worker_link(tcp.socket, timeout_s=5)
        await tcp.aclose()
        done.release()

    async def accept_loop(listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        while True:
            nursery.start_soon(one, await listener.accept())

    with worker_end, supervisor_end:
        async with trio.open_nursery() as nursery:
            await nursery.start(partial(receive_handoffs, supervisor_end, received))
            [listener] = await open_listeners(0, "127.0.0.1")
            nursery.start_soon(accept_loop, listener, nursery)
            port = listener.socket.getsockname()[1]
            start = cpu_s()
            with trio.fail_after(300):  # hang guard
                for _ in range(connections):
                    client = socket.create_connection(("127.0.0.1", port))
                    client.sendall(hello)
                    await done.acquire()
                    client.close()
            spent = cpu_s() - start
            nursery.cancel_scope.cancel()
    return spent / connections


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=2000)
    args = parser.parse_args()
    hello = client_hello()
    per = {mode: trio.run(run, mode, args.connections, hello) for mode in MODES}
    for mode in MODES:
        extra = per[mode] - per["accept"]
        cost = f"{per[mode] * 1e6:7.1f} us CPU/connection"
        print(f"{mode:8s} {cost} (+{extra * 1e6:.1f} over accept)")


if __name__ == "__main__":
    main()
