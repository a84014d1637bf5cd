"""The spawn thread and the child handle behind ``[site] supervisor_nice`` (real processes).

The priorities themselves are checked on a real supervisor in
tests/e2e/test_workers_priority.py (lowering this test process's own priority could not be
undone without privilege).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator

import pytest
import trio

from gateway.workers.priority import SpawnThread, lower_threads, nice_of, thread_ids


@pytest.fixture
def spawner() -> Iterator[SpawnThread]:
    thread = SpawnThread()
    yield thread
    thread.close()


async def test_run_sync_runs_on_the_spawn_thread_and_hands_back_results_and_errors(
    spawner: SpawnThread,
) -> None:
    assert spawner.native_id in thread_ids()
    assert await spawner.run_sync(threading.get_native_id) == spawner.native_id
    with pytest.raises(ZeroDivisionError):
        await spawner.run_sync(lambda: 1 // 0)
    assert await spawner.run_sync(lambda: "still serving") == "still serving"


async def test_a_child_exits_or_is_killed_and_wait_reports_it(spawner: SpawnThread) -> None:
    done = await spawner.open_process([sys.executable, "-c", "raise SystemExit(3)"])
    with trio.fail_after(30):  # hang guard
        assert await done.wait() == 3
    assert done.returncode == 3
    held = await spawner.open_process([sys.executable, "-c", "import time; time.sleep(60)"])
    assert held.returncode is None and held.pid > 0
    held.kill()
    with trio.fail_after(30):
        assert await held.wait() == -signal.SIGKILL
    held.send_signal(signal.SIGTERM)  # reaped: nothing is signalled any more


async def test_a_cancelled_wait_leaves_the_child_to_a_later_wait(spawner: SpawnThread) -> None:
    child = await spawner.open_process([sys.executable, "-c", "import time; time.sleep(60)"])
    with trio.move_on_after(0.05):
        await child.wait()
    assert child.returncode is None
    child.kill()
    with trio.fail_after(30):
        assert await child.wait() == -signal.SIGKILL


def test_no_increment_changes_nothing() -> None:
    before = {tid: nice_of(tid) for tid in thread_ids()}
    assert lower_threads(0) == 0
    assert {tid: nice_of(tid) for tid in before if tid in thread_ids()} == {
        tid: nice for tid, nice in before.items() if tid in thread_ids()
    }
    assert os.getpriority(os.PRIO_PROCESS, 0) == before[threading.get_native_id()]
