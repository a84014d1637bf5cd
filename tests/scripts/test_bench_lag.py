"""The bench's loop-stall plumbing: the lag probe reaches a worker-mode gateway's workers.

``scripts/bench_stall.py --workers N`` reports the workers' loop stalls from files that
``scripts/bench/worker_lag/sitecustomize.py`` makes each worker write; a worker left
unprobed, the supervisor probed as a worker, or a merge that drops a worker's worst figure
would make it report a data-path stall that was never measured.  No timing is asserted: the
figures in the files are whatever the machine gives; only which process wrote what, and how
the worst of them is picked.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import ModuleType

import trio

from gateway.demo.runner import gateway_argv, start_child, stop_child
from gateway.demo.topology import build_topology
from scripts.bench.lag_window import (
    task_cpu,
    window,
    worker_files,
    workers_task_cpu,
    workers_window,
)
from tests.e2e.harness import make_topology
from tests.e2e.proc_owner import children_of

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "scripts" / "bench" / "lag_probe.py"
SITECUSTOMIZE = REPO / "scripts" / "bench" / "worker_lag" / "sitecustomize.py"
ENV = "ISTHMUS_BENCH_WORKER_LAG"
WAIT_S = 60.0  # hang guard for the gateway's start and the probe's first lines


def _sitecustomize() -> ModuleType:
    """The bench's sitecustomize, loaded without its environment variable (so it does nothing
    on import) to reach its pure parts."""
    spec = importlib.util.spec_from_file_location("bench_sitecustomize", SITECUSTOMIZE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    saved = os.environ.pop(ENV, None)
    try:
        spec.loader.exec_module(module)
    finally:
        if saved is not None:
            os.environ[ENV] = saved
    return module


def _line(t: float, step: float, batch: float, gc: float, rss: int, wall: float, task: str) -> str:
    return f"{t:.3f}\t{step}\t{batch}\t{gc}\t2 steps {task}:1x=1(max 1)\t{rss}\t{wall}\t{task}\n"


def test_only_a_gateway_worker_command_line_is_probed() -> None:
    index = _sitecustomize().worker_index
    py = "/venv/bin/python"
    assert index([py, "-m", "gateway.cli", "worker", "c.toml", "--index", "3", "--x", "9"]) == "3"
    assert index([py, "-m", "gateway.cli", "run", "c.toml"]) is None  # the supervisor
    assert index([py, "scripts/bench/lag_probe.py", "o", "-m", "gateway.cli", "run"]) is None
    assert index([py, "-m", "gateway.cli", "worker", "c.toml"]) is None  # no index
    assert index([py, "-m", "gateway.cli", "worker", "--index"]) is None
    assert index([py, "-m", "gateway.cli", "worker", "--index", "x"]) is None
    assert index([py, "-c", "pass"]) is None


def test_workers_window_takes_each_figure_at_its_worst_worker(tmp_path: Path) -> None:
    (tmp_path / "worker-0-101.tsv").write_text(
        _line(10.0, 5.0, 40.0, 1.0, 300, 45.0, "a.step")
        + _line(10.1, 30.0, 31.0, 2.0, 310, 50.0, "a.big")
        + _line(20.0, 99.0, 99.0, 99.0, 999, 99.0, "a.later")  # outside the window
    )
    (tmp_path / "worker-1-102.tsv").write_text(
        _line(10.05, 12.0, 20.0, 25.0, 280, 70.0, "b.step") + "garbage line\n"
    )
    (tmp_path / "worker-2-103.tsv").write_text(_line(1.0, 500.0, 500.0, 0, 1, 500, "c.before"))
    (tmp_path / "lag.tsv").write_text(_line(10.0, 800.0, 800.0, 0, 1, 800, "supervisor"))
    (tmp_path / "worker-x-104.tsv").write_text(_line(10.0, 700.0, 700.0, 0, 1, 700, "odd"))
    assert sorted(worker_files(tmp_path)) == [101, 102, 103]
    worst = workers_window(tmp_path, 9.9, 10.2)
    assert worst["batch_ms"] == 40.0  # worker 0's first line
    assert worst["stall_ms"] == 30.0  # worker 0's second line
    assert worst["task"].startswith("[101] a.big | ")
    assert worst["gc_ms"] == 25.0  # worker 1
    assert worst["batch_wall_ms"] == 70.0  # worker 1
    assert worst["rss_mb"] == {101: 310, 102: 280}  # 103 wrote nothing in the window
    assert worst["workers"] == 2
    assert workers_window(tmp_path, 30.0, 40.0)["workers"] == 0
    assert window(tmp_path / "worker-0-101.tsv", 9.9, 10.2)["lines"] == 2


def test_gc_totals_add_up_over_lines_and_workers(tmp_path: Path) -> None:
    """``gc/s`` in bench_stall: every pass's CPU in the window, summed over the workers (not
    the worst, as the other figures); lines of a probe without the columns count nothing."""
    line = _line(10.0, 1.0, 2.0, 3.0, 300, 4.0, "a.step").rstrip("\n")
    (tmp_path / "worker-0-101.tsv").write_text(
        f"{line}\t7.5\t1\n{line}\t2.5\t0\n" + _line(10.1, 1.0, 2.0, 3.0, 300, 4.0, "old")
    )
    (tmp_path / "worker-1-102.tsv").write_text(f"{line}\t4.0\t2\n")
    assert window(tmp_path / "worker-0-101.tsv", 9.9, 10.2)["gc_total_ms"] == 10.0
    worst = workers_window(tmp_path, 9.9, 10.2)
    assert (worst["gc_total_ms"], worst["gc_full"]) == (14.0, 3)


def test_the_probe_counts_every_gc_pass(tmp_path: Path) -> None:
    """The probe's own line: a full collection run in the window is counted, with its time."""
    spec = importlib.util.spec_from_file_location("bench_lag_probe", PROBE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "lag.tsv"
    probe = module.StallProbe(str(out))
    try:
        gc.collect(2)
        gc.collect(2)
        probe.flushed = 0.0  # the window is over
        probe.maybe_flush()
    finally:
        gc.callbacks.remove(probe.on_gc)
        probe.out.close()
        probe.tasks_out.close()
    got = window(out, 0, 2e10)
    assert got["gc_full"] >= 2
    assert got["gc_total_ms"] > 0


def test_task_cpu_adds_up_each_task_name_in_the_window(tmp_path: Path) -> None:
    """The churn's CPU by task in bench_stall: lines within the window, summed by name and
    over the workers; a name with ``=`` in it keeps its last ``=`` as the separator."""
    (tmp_path / "worker-0-101.tsv").write_text("")
    (tmp_path / "worker-0-101.tsv.tasks").write_text(
        "10.0\ttcp._run=5.00,(loop)=1.00\n11.0\ttcp._run=7.00,a=b.run=2.00\n30.0\ttcp._run=99\n"
    )
    (tmp_path / "worker-1-102.tsv").write_text("")
    (tmp_path / "worker-1-102.tsv.tasks").write_text("10.5\ttcp._run=3.00\nbad line\n")
    assert task_cpu(tmp_path / "worker-0-101.tsv.tasks", 9.5, 11.0) == {
        "tcp._run": 12.0,
        "(loop)": 1.0,
        "a=b.run": 2.0,
    }
    assert workers_task_cpu(tmp_path, 9.5, 11.0)["tcp._run"] == 15.0
    assert task_cpu(tmp_path / "missing.tasks", 0, 1) == {}


def test_a_process_that_is_not_a_worker_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "lag"
    out.mkdir()
    env = dict(os.environ, PYTHONPATH=str(SITECUSTOMIZE.parent), **{ENV: str(out)})
    code = "import trio; trio.run(trio.sleep, 0.3)"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    assert list(out.iterdir()) == []


async def test_every_worker_of_a_probed_supervisor_writes_its_own_file(tmp_path: Path) -> None:
    """A real gateway with two workers under ``lag_probe.py --worker-lag``: each worker
    process (by pid, from /proc) writes ``worker-<index>-<pid>.tsv`` with probe lines, the
    supervisor writes only its own file."""
    topology = make_topology(["lag"])
    topology = replace(topology, sites=(replace(topology.sites[0], workers=2),))
    (site,) = await trio.to_thread.run_sync(build_topology, topology, tmp_path / "site")
    out = tmp_path / "worker-lag"
    own = tmp_path / "supervisor.tsv"
    argv = [
        sys.executable,
        str(PROBE),
        str(own),
        "--worker-lag",
        str(out),
        *gateway_argv(site.config_path)[1:],
        "--log-level",
        "warning",
    ]
    child = await start_child("gateway", argv, tmp_path / "gateway.log")
    try:
        files: dict[int, Path] = {}
        workers: set[int] = set()
        with trio.move_on_after(WAIT_S):
            while True:
                assert child.process.returncode is None, (tmp_path / "gateway.log").read_text()
                workers = set(children_of(child.process.pid))
                files = worker_files(out) if out.is_dir() else {}
                if (
                    len(workers) == 2
                    and set(files) == workers
                    and all(window(f, 0, 2e10)["lines"] for f in files.values())
                ):
                    break
                await trio.sleep(0.2)
        assert len(workers) == 2, f"workers {workers}"
        assert set(files) == workers, f"files {sorted(os.listdir(out))}, workers {workers}"
        assert sorted(p.name.split("-")[1] for p in files.values()) == ["0", "1"]
        assert all(window(f, 0, 2e10)["lines"] for f in files.values())
        # Each worker writes its lines and its CPU by task (and the stacks of slow steps, if
        # it had any), nothing else.
        assert sorted(p.name for p in out.iterdir() if p.suffix != ".slow") == sorted(
            name for p in files.values() for name in (p.name, p.name + ".tasks")
        )
        assert window(own, 0, 2e10)["lines"]  # the supervisor's probe, as before
        assert child.process.pid not in files
    finally:
        await stop_child(child)
