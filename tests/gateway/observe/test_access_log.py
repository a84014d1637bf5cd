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

from gateway.observe import access_log
from gateway.observe.access_log import AccessLog


async def test_a_write_cancelled_by_shutdown_still_lands(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entered, gate = threading.Event(), threading.Event()
    real_write = access_log._write

    def slow_write(lock: threading.Lock, out: IO[str], text: str) -> None:
        """The first write is slow (a busy disk, a pipe read late): it waits, under the
        sink's lock like any write, until the test lets it go."""
        if not entered.is_set():
            with lock:
                entered.set()
                assert gate.wait(30), "hang guard"
                out.write(text)
                out.flush()
            return
        real_write(lock, out, text)

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
    assert done and path.read_text("utf-8") == '{"line": 1}\n'


def _write_done(sink: AccessLog) -> bool:
    """Wait (in a thread) for the sink's lock: the held write, then the close, are done."""
    if not sink._io_lock.acquire(timeout=30):  # a hang guard
        return False
    sink._io_lock.release()
    return True
