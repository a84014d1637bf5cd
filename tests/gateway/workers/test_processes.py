"""The worker pool with real child processes (a stand-in worker program): restarts with
backoff, a drain that lets workers finish, SIGKILL past the grace, and workers that exit
when their supervisor is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.workers.channel import Channel
from gateway.workers.processes import (
    RestartBackoff,
    WorkerPool,
    describe_exit,
)

HERE = Path(__file__).parent
STAND_IN = HERE / "stand_in_worker.py"
HANG_GUARD_S = 60.0


class Seen:
    """What the workers said on their channels, as ``(index, message)``."""

    def __init__(self) -> None:
        self.messages: list[tuple[int, Any]] = []
        self._changed = trio.Event()

    async def on_channel(self, index: int, channel: Channel) -> None:
        while True:  # ChannelClosed ends it: the pool expects that
            message = await channel.receive()
            self.messages.append((index, message))
            self._changed.set()
            self._changed = trio.Event()

    async def on_handoff(self, index: int, sock: trio.socket.SocketType) -> None:
        await trio.sleep_forever()

    def said(self, index: int, what: str, pid: int | None) -> bool:
        return any(
            i == index and m[0] == what and pid in m[1:] for i, m in self.messages
        )

    async def wait_for(self, predicate: Callable[[], bool]) -> None:
        while not predicate():
            with trio.move_on_after(0.5):  # the pool's state changes without a message too
                await self._changed.wait()


def make_pool(seen: Seen, count: int, *args: str, **kwargs: Any) -> WorkerPool:
    return WorkerPool(
        count=count,
        config_path=Path("unused.toml"),
        on_channel=seen.on_channel,
        on_handoff=seen.on_handoff,
        extra_args=args,
        program=(sys.executable, str(STAND_IN)),
        **kwargs,
    )


def gone(pid: int) -> bool:
    """The process ``pid`` has exited (no longer exists, or a zombie nobody reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def serving(pool: WorkerPool, seen: Seen, index: int, restarts: int) -> bool:
    status = pool.workers_status()[index]
    return (
        status["restarts"] == restarts
        and status["pid"] is not None
        and seen.said(index, "hello", status["pid"])
    )


def test_backoff_doubles_to_its_cap_and_starts_over_after_a_long_run() -> None:
    backoff = RestartBackoff(base_s=0.5, cap_s=30.0, reset_after_s=60.0)
    streak, delays = 0, []
    for _ in range(8):
        streak, delay = backoff.after_exit(streak, up_for_s=1.0)
        delays.append(delay)
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert backoff.after_exit(streak, up_for_s=60.0) == (1, 0.5)
    assert backoff.after_exit(10_000, up_for_s=0.0)[1] == 30.0  # no overflow


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(3) == "exit code 3"
    assert describe_exit(-signal.SIGKILL) == "signal SIGKILL"
    assert describe_exit(None) == "running"


async def test_a_crashed_worker_is_started_again_with_backoff(tmp_path: Path) -> None:
    seen = Seen()
    backoff = RestartBackoff(base_s=0.05, cap_s=0.15)
    crash = ("--mode", "crash-first", "--crashes", "2", "--state", str(tmp_path))
    pool = make_pool(seen, 2, *crash, backoff=backoff)
    with trio.fail_after(HANG_GUARD_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            for index in range(2):
                await seen.wait_for(lambda i=index: serving(pool, seen, i, 2))  # type: ignore[misc]
                assert pool.workers_status()[index]["last_exit"] == "exit code 3"
                assert pool.restart_delays(index) == [0.05, 0.1]
            first = pool.workers_status()[0]["pid"]
            os.kill(first, signal.SIGKILL)
            await seen.wait_for(lambda: serving(pool, seen, 0, 3))
            status = pool.workers_status()
            assert status[0]["last_exit"] == "signal SIGKILL"
            assert pool.restart_delays(0) == [0.05, 0.1, 0.15]  # capped
            assert status[1]["restarts"] == 2  # the other worker was left alone
            assert gone(first)
            await pool.drain(30.0)
        # pool.run returned: after a drain nothing is started again
    for index, status in pool.workers_status().items():
        assert status["state"] == "stopped" and status["pid"] is None
        assert status["last_exit"] == "exit code 0", index


async def test_a_drain_lets_workers_finish_and_restarts_none() -> None:
    seen = Seen()
    pool = make_pool(seen, 2, "--mode", "serve", "--linger", "0.3", kill_after_s=30.0)
    with trio.fail_after(HANG_GUARD_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            await seen.wait_for(lambda: all(serving(pool, seen, i, 0) for i in range(2)))
            pids = [pool.workers_status()[i]["pid"] for i in range(2)]
            await pool.drain(30.0)
    for index, pid in enumerate(pids):
        assert seen.said(index, "draining", pid)  # it got Drain and finished by itself
    for status in pool.workers_status().values():
        assert status["last_exit"] == "exit code 0" and status["restarts"] == 0
    assert all(gone(pid) for pid in pids)


async def test_a_worker_past_its_grace_is_killed() -> None:
    seen = Seen()
    pool = make_pool(seen, 1, "--mode", "ignore-drain", kill_after_s=0.5)
    with trio.fail_after(HANG_GUARD_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            await seen.wait_for(lambda: serving(pool, seen, 0, 0))
            pid = pool.workers_status()[0]["pid"]
            await pool.drain(0.2)
    status = pool.workers_status()[0]
    assert status["last_exit"] == "signal SIGKILL"
    assert status["state"] == "stopped" and status["restarts"] == 0
    assert gone(pid)


async def test_cancelling_the_pool_stops_its_workers() -> None:
    seen = Seen()
    pool = make_pool(seen, 2, "--mode", "serve")
    with trio.fail_after(HANG_GUARD_S):
        async with trio.open_nursery() as nursery:
            await nursery.start(pool.run)
            await seen.wait_for(lambda: all(serving(pool, seen, i, 0) for i in range(2)))
            pids = [pool.workers_status()[i]["pid"] for i in range(2)]
            nursery.cancel_scope.cancel()
    # Their channels closed: they exited on the EOF, not by SIGKILL.
    assert [s["last_exit"] for s in pool.workers_status().values()] == ["exit code 0"] * 2
    assert all(gone(pid) for pid in pids)


async def test_workers_exit_when_their_supervisor_is_killed() -> None:
    supervisor = await trio.lowlevel.open_process(
        [sys.executable, str(HERE / "stand_in_supervisor.py"), "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert supervisor.stdout is not None and supervisor.stderr is not None
    try:
        with trio.fail_after(HANG_GUARD_S):
            out = b""
            while out.count(b"pid ") < 2:
                chunk = await supervisor.stdout.receive_some(4096)
                assert chunk, "the supervisor ended before both workers said hello"
                out += chunk
            pids = [int(line.split()[1]) for line in out.decode().splitlines()]
            assert all(os.getpgid(pid) != os.getpgid(supervisor.pid) for pid in pids)
            supervisor.kill()
            await supervisor.wait()
            # The workers hold the supervisor's stderr: its EOF says they all closed it.
            err = b""
            while chunk := await supervisor.stderr.receive_some(4096):
                err += chunk
            for _ in range(200):  # and the last step of their exit, bounded
                if all(gone(pid) for pid in pids):
                    break
                await trio.sleep(0.05)
            assert all(gone(pid) for pid in pids)
    finally:
        if supervisor.returncode is None:
            supervisor.kill()
            await supervisor.wait()
    # Workers write to the supervisor's stderr.
    assert b"stand-in worker=0" in err and b"stand-in worker=1" in err


@pytest.mark.parametrize("count", [0, -1])
def test_a_pool_needs_a_worker(count: int) -> None:
    seen = Seen()
    with pytest.raises(ValueError):
        make_pool(seen, count)
