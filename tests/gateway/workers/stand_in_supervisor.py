"""A supervisor process for the pool's tests: a :class:`WorkerPool` of ``sys.argv[1]``
stand-in workers (``serve`` mode), printing ``pid <worker pid>`` for each hello, until it is
killed (or 120 s pass)."""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from gateway.workers.channel import Channel
from gateway.workers.processes import WorkerPool

STAND_IN = Path(__file__).with_name("stand_in_worker.py")


async def on_channel(index: int, channel: Channel) -> None:
    while True:
        message = await channel.receive()
        if isinstance(message, tuple) and message[0] == "hello":
            print(f"pid {message[2]}", flush=True)


async def on_handoff(index: int, sock: trio.socket.SocketType) -> None:
    await trio.sleep_forever()


async def main(count: int) -> None:
    pool = WorkerPool(
        count=count,
        config_path=Path("unused.toml"),
        on_channel=on_channel,
        on_handoff=on_handoff,
        program=(sys.executable, str(STAND_IN)),
    )
    with trio.move_on_after(120):
        await pool.run()


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]))
