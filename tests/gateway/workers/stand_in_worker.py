"""A stand-in for ``isthmus worker`` in the pool's tests: the same command line, with a
behaviour chosen by ``--mode`` (the real worker needs a whole gateway; the pool does not).

It says ``("hello", index, pid)`` on its channel first, writes one line to stderr (the
supervisor's, so a test sees where workers' logs go), then:

* ``serve``: waits for messages; on ``Drain`` says ``("draining", pid)``, lingers
  ``--linger`` seconds (its "requests in flight") and exits 0; at the channel's EOF (the
  supervisor gone) it exits 0 at once;
* ``crash-first``: exits 3 on each of its first ``--crashes`` starts (counted per index in
  ``--state``), then serves;
* ``ignore-drain``: serves, but a ``Drain`` changes nothing (only SIGKILL ends it).

Every mode exits by itself after 120 s: a test that fails never leaves it behind.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import trio

from gateway.workers.channel import ChannelClosed, channel_from_socket
from gateway.workers.messages import Drain

HANG_GUARD_S = 120.0


async def main(args: argparse.Namespace) -> int:
    import socket

    channel = channel_from_socket(socket.socket(fileno=args.channel_fd))
    os.close(args.handoff_fd)
    crash = False
    if args.mode == "crash-first":  # counted before the hello: a test may kill us after it
        counter = Path(args.state) / f"starts-{args.index}"
        starts = int(counter.read_text()) if counter.exists() else 0
        counter.write_text(str(starts + 1))
        crash = starts < args.crashes
    await channel.send(("hello", args.index, os.getpid()))
    print(f"stand-in worker={args.index} pid={os.getpid()} up", file=sys.stderr, flush=True)
    if crash:
        return 3
    with trio.move_on_after(HANG_GUARD_S):
        while True:
            try:
                message = await channel.receive()
            except ChannelClosed:
                return 0  # the supervisor is gone
            if isinstance(message, Drain) and args.mode != "ignore-drain":
                await channel.send(("draining", os.getpid()))
                await trio.sleep(args.linger)
                return 0
    return 4


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("config")
    parser.add_argument("--index", type=int, required=True)
    parser.add_argument("--channel-fd", type=int, required=True)
    parser.add_argument("--handoff-fd", type=int, required=True)
    parser.add_argument("--mode", default="serve")
    parser.add_argument("--crashes", type=int, default=0)
    parser.add_argument("--state", default="")
    parser.add_argument("--linger", type=float, default=0.0)
    sys.exit(trio.run(main, parser.parse_args()))
