#!/usr/bin/env python3
"""Benchmark: CPU per byte of one bulk tunnel across an HTTP/2 link, against a plain copy.

Why: on the 2-core CI machine the end-to-end L4 figure (``bench_dataplane.py``) mixes four
processes competing for two cores, and its run-to-run spread hides changes of 10-20 % in the
link.  This measures the link alone, in ONE process (so CPU time is both ends' cost), over a
``socket.socketpair()``:

* ``direct``: a trio task copies chunks into one end, another reads them from the other end --
  the least any trio relay does per chunk (the reference, measured in the same run);
* ``link``: the same chunks sent on a CONNECT stream of a client-role ``H2Connection`` and read
  by the stream handler of the server-role one, with the links' limits (1 MiB stream window,
  8 MiB connection window, 64 KiB frames, 1 MiB outbound buffer) and 64 KiB sends, as a
  tunnel's splice does.

The two alternate in slices so that drift hits both alike; the result is MB per CPU-second of
each and the ratio link / direct (1.0 would be a link that costs nothing beyond the sockets).
No TLS: TLS costs the same per byte with or without HTTP/2 (see ``bench_dataplane``'s floor).

Run:  .venv/bin/python scripts/bench_link.py [--mib 256] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import time
from pathlib import Path

import trio

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from overlay.h2.connection import H2Connection
from overlay.h2.limits import H2Limits
from overlay.h2.stream import H2Stream

CHUNK = 64 * 1024
LIMITS = H2Limits(
    stream_window=1 << 20,
    connection_window=8 << 20,
    max_frame_size=64 * 1024,
    max_outbound_buffer=1 << 20,
    read_size=256 * 1024,
)


def _pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    a, b = socket.socketpair()
    return (
        trio.SocketStream(trio.socket.from_stdlib_socket(a)),
        trio.SocketStream(trio.socket.from_stdlib_socket(b)),
    )


async def _direct(total: int) -> float:
    """CPU seconds to move ``total`` bytes through a socketpair, trio on both ends."""
    tx, rx = _pair()
    chunk = os.urandom(CHUNK)
    start = time.process_time()
    async with trio.open_nursery() as nursery:

        async def sink() -> None:
            got = 0
            while got < total:
                got += len(await rx.receive_some(CHUNK))

        nursery.start_soon(sink)
        for _ in range(total // CHUNK):
            await tx.send_all(chunk)
    used = time.process_time() - start
    await tx.aclose()
    await rx.aclose()
    return used


async def _link(total: int) -> float:
    """CPU seconds to move ``total`` bytes through a CONNECT stream of an HTTP/2 link."""
    tx, rx = _pair()
    done = trio.Event()
    got = [0]

    async def handler(stream: H2Stream) -> None:
        await stream.send_headers([(":status", "200")])
        while data := await stream.receive_some(CHUNK):
            got[0] += len(data)
        done.set()

    server = H2Connection(rx, client_side=False, handler=handler, limits=LIMITS, ping_interval=None)
    client = H2Connection(tx, client_side=True, limits=LIMITS, ping_interval=None)
    chunk = os.urandom(CHUNK)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        await nursery.start(client.serve)
        stream = await client.open_stream([(":method", "CONNECT"), (":authority", "b.a.isthmus:1")])
        await stream.response_headers()
        start = time.process_time()
        for _ in range(total // CHUNK):
            await stream.send_all(chunk)
        await stream.send_eof()
        await done.wait()
        used = time.process_time() - start
        if got[0] != total:
            raise SystemExit(f"link delivered {got[0]} of {total} bytes")
        nursery.cancel_scope.cancel()
    return used


async def main(mib: int, rounds: int) -> None:
    total = mib * (1 << 20) // CHUNK * CHUNK
    direct: list[float] = []
    link: list[float] = []
    for r in range(rounds):
        with trio.fail_after(600):
            direct.append(total / await _direct(total) / 1e6)
            link.append(total / await _link(total) / 1e6)
        print(f"round {r + 1}: direct {direct[-1]:.0f}, link {link[-1]:.0f} MB per CPU-second")
    d, k = statistics.median(direct), statistics.median(link)
    print(
        f"median of {rounds}: direct {d:.0f}, link {k:.0f} MB per CPU-second; "
        f"ratio link/direct {k / d:.2f} ({mib} MiB per run, {CHUNK // 1024} KiB sends)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="MiB moved per run (256)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    args = parser.parse_args()
    trio.run(main, args.mib, args.rounds)
