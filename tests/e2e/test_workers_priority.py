"""In worker mode the supervisor yields the CPU to its workers (``[site] supervisor_nice``).

Real processes: a site of one supervisor and two workers.  The supervisor's threads run at
the configured nice value above the gateway's own, its workers at the gateway's own -- also a
worker the supervisor starts again after it was killed (every worker is forked from the one
thread kept at the original priority; a worker could not lower its own priority again).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.e2e.harness import make_topology, open_overlay, with_site
from tests.e2e.proc_owner import alive, children_of

WAIT_S = 30.0  # hang guard for each state change
NICE = 7


def thread_nices(pid: int) -> list[int]:
    """The nice value of each thread of ``pid`` (field 19 of /proc/PID/task/TID/stat)."""
    nices = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        stat = (task / "stat").read_text()
        nices.append(int(stat[stat.rindex(")") + 2 :].split()[16]))
    return nices


def _serving(doc: Any) -> bool:
    rows = doc.get("workers", []) if isinstance(doc, dict) else []
    return len(rows) == 2 and all(r.get("serving") for r in rows)


async def test_the_supervisor_runs_at_a_lower_priority_than_its_workers(tmp_path: Path) -> None:
    base = os.getpriority(os.PRIO_PROCESS, 0)  # the gateway starts with the test's own
    if base + NICE > 19:
        pytest.skip(f"the tests run at nice {base}: no room for +{NICE}")
    expected = base + NICE
    topology = with_site(make_topology(["solo"]), "solo", workers=2)

    def patch(_site: str, text: str) -> str:
        assert text.count("workers = 2") == 1
        return text.replace("workers = 2", f"workers = 2\nsupervisor_nice = {NICE}")

    async with open_overlay(tmp_path, topology, patch=patch) as ov:
        await ov.wait("solo", "/workers", _serving, within_s=WAIT_S)
        supervisor = ov.children["solo"].process.pid
        nices = thread_nices(supervisor)
        # Every thread but the one that forks the workers.
        assert sorted(nices) == [base] + [expected] * (len(nices) - 1), nices
        workers = children_of(supervisor)
        assert len(workers) == 2, workers
        for pid in workers:
            assert set(thread_nices(pid)) == {base}, (pid, thread_nices(pid))

        os.kill(workers[0], signal.SIGKILL)  # our gateway's own worker, by PID
        with trio.fail_after(WAIT_S):
            while True:  # started again (after the pool's 0.5 s backoff)
                now = children_of(supervisor)
                if len(now) == 2 and workers[0] not in now and not alive(workers[0]):
                    break
                await trio.sleep(0.1)
        (restarted,) = set(now) - set(workers)
        assert set(thread_nices(restarted)) == {base}, thread_nices(restarted)
        assert "supervisor runs at nice +7 from its workers" in ov.log("solo")
