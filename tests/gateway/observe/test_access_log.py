"""The access log's sink keeps every line it took, even when shutdown cancels a write.

Why: a flush drains the queue, then writes in a worker thread.  When the gateway is stopped
while that write is under way, the flush is cancelled and the write abandoned -- but its lines
are no longer queued, so closing the file under it lost them (an e2e test saw a whole
gateway's lines missing after SIGTERM, about one run in five).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import IO

import pytest
import trio
import trio.testing

from gateway.observe import access_log
from gateway.observe.access_log import AccessLog


async def test_a_write_cancelled_by_shutdown_still_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, gate, wrote = threading.Event(), threading.Event(), threading.Event()
    real_write = access_log._write

    def slow_write(lock: threading.Lock, out: IO[str], batch: access_log._Batch) -> None:
        """The first write is slow (a busy disk, a pipe read late): it waits, under the
        sink's lock like any write, until the test lets it go."""
        if not entered.is_set():
            with lock:
                entered.set()
                assert gate.wait(30), "hang guard"
                access_log._put(out, batch)
                wrote.set()
            return
        real_write(lock, out, batch)

    monkeypatch.setattr(access_log, "_write", slow_write)
    path = tmp_path / "access.log"
    sink = AccessLog(str(path), 1.0, flush_interval_s=0.01, close_timeout_s=0.2)
    with trio.fail_after(30):  # a hang guard, not a bound on speed
        async with trio.open_nursery() as nursery:
            await nursery.start(sink.serve)
            sink.write('{"line": 1}')
            await trio.to_thread.run_sync(entered.wait)  # the write is under way, drained
            nursery.cancel_scope.cancel()  # shutdown: the flush is cancelled mid-write
        gate.set()  # only now may the abandoned write go on
        done = await trio.to_thread.run_sync(_write_done, sink)
    assert done and wrote.is_set() and path.read_text("utf-8") == '{"line": 1}\n'


def _write_done(sink: AccessLog) -> bool:
    """Wait (in a thread) for the sink's lock: the held write, then the close, are done."""
    if not sink._io_lock.acquire(timeout=30):  # a hang guard
        return False
    sink._io_lock.release()
    return True


def test_line_chunks_keep_lines_whole_and_bounded() -> None:
    lines = [f'{{"n": {i}, "pad": "{"x" * (i % 300)}"}}\n' for i in range(200)]
    text = "".join(lines)
    chunks = access_log.line_chunks(text, limit=1000)
    assert "".join(chunks) == text
    assert all(len(c) <= 1000 and c.endswith("\n") for c in chunks)
    long_line = "y" * 5000 + "\n"
    assert access_log.line_chunks("a\n" + long_line + "b\n", limit=100) == ["a\n", long_line, "b\n"]


async def test_a_flush_cancelled_before_its_write_keeps_its_lines_for_shutdown(
    tmp_path: Path,
) -> None:
    """A shutdown that cancels a flush before its write started: the lines stay queued, and
    the shutdown's own flush writes them (they used to be drained, then dropped)."""
    path = tmp_path / "access.log"
    sink = AccessLog(str(path), 1.0)
    sink.write('{"n": 1}')
    with open(path, "a", encoding="utf-8") as out:  # noqa: ASYNC230 -- a test's small file
        with trio.CancelScope() as scope:
            scope.cancel()
            await sink._flush(out)
        assert sink._lines == ['{"n": 1}']
        await sink._flush(out)
    assert path.read_text("utf-8") == '{"n": 1}\n'


class _HeldStdout:
    """A stdout whose write blocks until released: a pipe whose reader is slow."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.written: list[str] = []

    def write(self, text: str) -> int:
        self.entered.set()
        if not self.release.wait(timeout=30):  # a hang guard
            raise OSError("never released")
        self.written.append(text)
        return len(text)

    def flush(self) -> None:
        pass


async def test_stdout_shutdown_waits_for_a_write_under_way(monkeypatch: pytest.MonkeyPatch) -> None:
    """``path = "-"``: a shutdown during a write returns only when the write is done -- the
    write runs in a daemon thread that the process's exit would kill mid-way, losing its lines
    (two writer processes on one pipe lost a third of their lines now and then)."""
    import sys

    held = _HeldStdout()
    monkeypatch.setattr(sys, "stdout", held)
    sink = AccessLog("-", 1.0, flush_interval_s=0.001, close_timeout_s=30)
    done = trio.Event()
    scope = trio.CancelScope()

    async def serve() -> None:
        with scope:
            await sink.serve()
        done.set()

    sink.write('{"n": 1}')
    async with trio.open_nursery() as nursery:
        nursery.start_soon(serve)
        await trio.to_thread.run_sync(held.entered.wait, 30)
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert not done.is_set()  # still waiting for the write
        held.release.set()
        with trio.fail_after(30):  # a hang guard
            await done.wait()
    assert held.written == ['{"n": 1}\n']


class _LateLock:
    """The sink's lock, whose first taker (the flush's write thread) is held just before it
    takes it -- a thread started but not yet run, as on a busy machine -- while any later
    taker (the shutdown's) goes straight in."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.entered = threading.Event()
        self.release = threading.Event()

    def __enter__(self) -> None:
        if not self.entered.is_set():
            self.entered.set()
            assert self.release.wait(30), "hang guard"
        self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


@pytest.mark.parametrize("to_stdout", [False, True], ids=["file", "stdout"])
async def test_shutdown_writes_lines_whose_write_thread_has_not_taken_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, to_stdout: bool
) -> None:
    """Shutdown while the flush's write thread is started but has not yet taken the lock:
    serve returns only with those lines written, once.  The shutdown used to take the lock
    first, find no write under way and return (stdout: the process exits and kills the write
    thread; a file: it is closed under the write) -- the pipe test lost a whole batch."""
    import sys

    path = tmp_path / "access.log"
    out = open(path, "a", encoding="utf-8")  # noqa: SIM115,ASYNC230 -- the test's stdout
    if to_stdout:
        monkeypatch.setattr(sys, "stdout", out)
    sink = AccessLog("-" if to_stdout else str(path), 1.0, flush_interval_s=0.001)
    late = _LateLock()
    sink._io_lock = late  # type: ignore[assignment]
    sink.write('{"n": 1}')
    try:
        with trio.fail_after(30):  # a hang guard
            async with trio.open_nursery() as nursery:
                await nursery.start(sink.serve)
                await trio.to_thread.run_sync(late.entered.wait, 30)
                nursery.cancel_scope.cancel()  # shutdown: the flush is abandoned
            out.flush()
            written_at_return = path.read_text("utf-8")
            late.release.set()  # the abandoned thread now runs: it must not write again
            await trio.to_thread.run_sync(_settled, late)
    finally:
        late.release.set()
        out.close()
    assert written_at_return == '{"n": 1}\n'
    assert path.read_text("utf-8") == '{"n": 1}\n'


def _settled(lock: _LateLock) -> None:
    """Wait (in a thread) until the abandoned write thread has been through the lock."""
    with lock:
        pass


async def test_shutdown_writes_lines_whose_write_thread_never_started(tmp_path: Path) -> None:
    """A flush waiting for a thread (the default thread limiter, shared with the rest of the
    process, is full) when shutdown comes: its thread never starts, yet its lines -- drained
    already -- are written by the shutdown (they were dropped)."""
    path = tmp_path / "access.log"
    sink = AccessLog(str(path), 1.0, flush_interval_s=0.001, close_timeout_s=30)
    limiter = trio.to_thread.current_default_thread_limiter()
    limiter.total_tokens = 1
    holder = object()
    await limiter.acquire_on_behalf_of(holder)  # the one thread slot is busy
    sink.write('{"n": 1}')
    scope = trio.CancelScope()

    async def serve() -> None:
        with scope:
            await sink.serve()

    with trio.fail_after(30):  # a hang guard
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            while sink._lines:  # noqa: ASYNC110 -- no event marks a drain; the flush took the line
                await trio.sleep(0.001)
            await trio.testing.wait_all_tasks_blocked()
            scope.cancel()  # shutdown: the waiting flush is cancelled
            await trio.testing.wait_all_tasks_blocked()
            limiter.release_on_behalf_of(holder)  # the shutdown's thread may start
    assert path.read_text("utf-8") == '{"n": 1}\n'


WRITER = """
import sys, trio
from gateway.observe.access_log import AccessLog

async def main(tag: str) -> None:
    # The shutdown writes what queued and waits for a write under way, for up to
    # close_timeout_s: here a hang guard, as the reader is slow on purpose.
    sink = AccessLog("-", 1.0, flush_interval_s=0.001, close_timeout_s=30)
    async with trio.open_nursery() as nursery:
        await nursery.start(sink.serve)
        for batch in range(40):
            for i in range(200):
                pad = "z" * (i % 97)
                sink.write('{"w": "%s", "b": %d, "i": %d, "pad": "%s"}' % (tag, batch, i, pad))
            await trio.sleep(0.001)
        nursery.cancel_scope.cancel()  # the sink's shutdown, as the gateway's
    if sink.dropped or sink.write_errors:
        sys.exit(f"{tag}: {sink.dropped} lines dropped, {sink.write_errors} write errors")

trio.run(main, sys.argv[1])
"""


async def test_processes_writing_to_one_pipe_never_mix_inside_a_line() -> None:
    """Two real processes (as two workers) write their access logs to the same pipe (the
    supervisor's stdout, read by a log collector): every line read is one whole JSON
    object, and none is lost -- the writers stop as a gateway does, by cancelling the sink,
    most often while a write waits for the slow reader."""
    import json
    import os
    import sys

    read_fd, write_fd = os.pipe()
    procs = [
        await trio.lowlevel.open_process([sys.executable, "-c", WRITER, tag], stdout=write_fd)
        for tag in ("a", "b")
    ]
    os.close(write_fd)
    data = bytearray()
    with trio.fail_after(60):  # a hang guard
        async with trio.lowlevel.FdStream(read_fd) as pipe:
            while chunk := await pipe.receive_some(16384):
                data += chunk
                await trio.sleep(0.004)  # a collector that reads a little late
        for proc in procs:
            assert await proc.wait() == 0
    lines = data.decode("utf-8").splitlines()
    parsed = [json.loads(line) for line in lines]  # a mixed line fails here
    assert len(parsed) == 2 * 40 * 200
