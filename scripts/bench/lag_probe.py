"""Run a gateway with a trio instrument that records event-loop stalls.  BENCH-ONLY.

``python scripts/bench/lag_probe.py OUT.tsv -m gateway.cli run CONFIG ...`` runs the gateway as
``python -m gateway.cli`` would, with an instrument added to its ``trio.run``.  Every 100 ms it
appends one line to OUT: wall time, the longest single task step in that window (CPU time of
the loop's thread: nothing else ran meanwhile, a request that became ready waited that long),
the longest scheduler batch (from one I/O wait to the next, CPU time: the loop's own work, not
the time the OS gave the core to other processes), the longest cyclic-GC pass (CPU time of the
thread that ran it), what ran in the longest batch (``N steps name:COUNTx=TOTAL(max LONGEST)``
for the four task names that took most of it, in ms), the RSS in MB and the longest batch in wall
time (which includes time the process waited for a core on a shared machine), the task of
the longest step, and the CPU time of all GC passes in the window with the number of full
(generation 2) passes among them.  Every second it appends to ``OUT.tasks`` the CPU time
each task name's steps took since the line before, and the loop's own (``(loop)``:
scheduling, I/O polling and the probe), to tell where a phase's CPU goes.  A task step that
runs for 40 ms gets the loop thread's stack written to ``OUT.slow`` (by a watching thread).

``--heap-budget S`` (before ``-m``) sets the catalog service's GC pass budget (``inf``: no
heap keeper), to measure what it buys; ``--decoder json`` (after it, before ``-m``) makes the
Consul source decode with the standard library's json instead of orjson;
``--snapshot-coalesce S`` (last, before ``-m``) sets how long a supervisor gathers changes
before it sends its workers a step.

``--worker-lag DIR`` (first, before the others) measures a worker-mode gateway's workers too:
it puts ``scripts/bench/worker_lag`` on the ``PYTHONPATH`` this process hands down, whose
``sitecustomize.py`` installs the same probe (:func:`install`) in every ``gateway.cli worker``
process the supervisor starts, each writing ``DIR/worker-<index>-<pid>.tsv``.  ``--heap-budget``
and ``--decoder`` change this process only (the supervisor in worker mode).

Every file the probe writes stops growing at ``MAX_BYTES`` (about 4 days of lines).
"""

from __future__ import annotations

import gc
import os
import runpy
import sys
import time
from typing import Any

import trio
import trio.lowlevel

WINDOW_S = 0.1
#: How often the probe writes the CPU time of each task (``OUT.tasks``).
TASKS_S = 1.0
#: A task step this long (wall time) gets its stack written to ``OUT.slow``.
SLOW_STEP_S = 0.04
MAX_SLOW_DUMPS = 50
PAGE = os.sysconf("SC_PAGE_SIZE")
#: A probe stops writing its TSV past this size (a line is ~150 bytes, ten a second).
MAX_BYTES = 64 << 20
#: The environment variable that tells ``worker_lag/sitecustomize.py`` where to write.
WORKER_LAG_ENV = "ISTHMUS_BENCH_WORKER_LAG"
WORKER_LAG_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "worker_lag")


def task_name(task: trio.lowlevel.Task) -> str:
    """The last two parts of a task's name (``Class.method``)."""
    return ".".join(task.name.rsplit(".", 2)[-2:])


class StallProbe(trio.abc.Instrument):
    def __init__(self, path: str, max_bytes: int = MAX_BYTES) -> None:
        self.out = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self.room = max_bytes
        self.step0 = self.batch0 = time.perf_counter()
        self.max_step = self.max_batch = self.max_gc = 0.0
        self.task = ""
        self.step_task = ""
        self.flushed = time.time()
        self.gc0 = 0.0
        self.batch_cpu0 = 0.0
        self.max_batch_wall = 0.0
        self.gc_total = 0.0  # every pass's CPU time in the window, young and full
        self.gc_full = 0  # full (generation 2) passes in the window
        self.in_batch: dict[trio.lowlevel.Task, list[float]] = {}
        # CPU by task over TASKS_S, and the loop's own (batches minus their task steps).
        self.tasks_out = open(path + ".tasks", "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        self.tasks_room = max_bytes
        self.win_tasks: dict[trio.lowlevel.Task, float] = {}
        self.loop_cpu = 0.0
        self.tasks_flushed = time.time()
        self.stepping: trio.lowlevel.Task | None = None  # the task in its step, if any
        self.step_wall0 = time.perf_counter()
        gc.callbacks.append(self.on_gc)

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        # CPU time of the collecting thread (the loop's or a decoder's: either way every
        # thread waits for the GIL meanwhile); wall time would count other processes' turns.
        if phase == "start":
            self.gc0 = time.thread_time()
        else:
            took = time.thread_time() - self.gc0
            self.max_gc = max(self.max_gc, took)
            self.gc_total += took
            self.gc_full += info.get("generation") == 2

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.step0 = time.thread_time()
        self.step_wall0 = time.perf_counter()
        self.stepping = task

    def watch_slow_steps(self, path: str, slow_s: float = SLOW_STEP_S) -> None:
        """Start a thread that writes the loop thread's stack to ``path`` whenever one task
        step has run for ``slow_s`` (once per step, at most ``MAX_SLOW_DUMPS``): where a long
        stall's time goes, which the step's task name alone does not say."""
        import threading
        import traceback

        loop_thread = threading.get_ident()

        def watch() -> None:
            dumped: object = None
            dumps = 0
            while dumps < MAX_SLOW_DUMPS:
                time.sleep(slow_s / 5)
                task = self.stepping
                if task is None or task is dumped:
                    continue
                if time.perf_counter() - self.step_wall0 < slow_s:
                    continue
                frame = sys._current_frames().get(loop_thread)
                if frame is None or self.stepping is not task:
                    continue
                dumped = task
                dumps += 1
                with open(path, "a", encoding="utf-8") as out:
                    out.write(f"== {time.time():.3f} {task_name(task)}\n")
                    out.write("".join(traceback.format_stack(frame)[-40:]))

        threading.Thread(target=watch, name="slow-step-watch", daemon=True).start()

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.stepping = None
        # Kept lean: it runs after every task step of the probed loop, and its own CPU is
        # load on the machine the bench measures (a py-spy profile of a supervisor in the
        # churn phase: 18 % of its samples in here when it named every step's task).  Tasks
        # are named only when they make a figure: the longest step, the longest batch.
        took = time.thread_time() - self.step0
        seen = self.in_batch.get(task)
        if seen is None:
            self.in_batch[task] = [1.0, took, took]
        else:
            seen[0] += 1
            seen[1] += took
            if took > seen[2]:
                seen[2] = took
        if took > self.max_step:
            self.max_step = took
            self.step_task = task_name(task)

    def after_io_wait(self, timeout: float) -> None:
        self.batch0 = time.perf_counter()
        self.batch_cpu0 = time.thread_time()
        self.in_batch = {}

    def before_io_wait(self, timeout: float) -> None:
        took = time.perf_counter() - self.batch0
        cpu = time.thread_time() - self.batch_cpu0
        self.max_batch_wall = max(self.max_batch_wall, took)
        stepped = 0.0
        win = self.win_tasks
        for task, seen in self.in_batch.items():
            win[task] = win.get(task, 0.0) + seen[1]
            stepped += seen[1]
        self.loop_cpu += cpu - stepped
        if cpu > self.max_batch:
            self.max_batch = cpu
            named: dict[str, list[float]] = {}
            for task, (count, total, longest) in self.in_batch.items():
                seen = named.setdefault(task_name(task), [0.0, 0.0, 0.0])
                seen[0] += count
                seen[1] += total
                seen[2] = max(seen[2], longest)
            top = sorted(named.items(), key=lambda kv: -kv[1][1])[:4]
            steps = sum(int(v[0]) for v in named.values())
            self.task = f"{steps} steps " + ",".join(
                f"{n}:{int(c)}x={t * 1e3:.0f}(max {m * 1e3:.0f})" for n, (c, t, m) in top
            )
        self.maybe_flush()

    def maybe_flush(self) -> None:
        now = time.time()
        if now - self.flushed >= WINDOW_S:
            with open("/proc/self/statm") as statm:
                rss = int(statm.read().split()[1]) * PAGE / 2**20
            line = (
                f"{now:.3f}\t{self.max_step * 1e3:.2f}\t{self.max_batch * 1e3:.2f}\t"
                f"{self.max_gc * 1e3:.2f}\t{self.task}\t{rss:.0f}\t"
                f"{self.max_batch_wall * 1e3:.2f}\t{self.step_task}\t"
                f"{self.gc_total * 1e3:.2f}\t{self.gc_full}\n"
            )
            if len(line) <= self.room:
                self.room -= len(line)
                self.out.write(line)
            self.flushed = now
            self.max_step = self.max_batch = self.max_gc = self.max_batch_wall = 0.0
            self.gc_total, self.gc_full = 0.0, 0
        if now - self.tasks_flushed >= TASKS_S:
            self.flush_tasks(now)

    def flush_tasks(self, now: float) -> None:
        """One line: the time, then ``name=ms`` for every task name that ran since the last
        line (its steps' CPU time), and ``(loop)``: the scheduler's and I/O polling's own."""
        named: dict[str, float] = {"(loop)": self.loop_cpu}
        for task, cpu in self.win_tasks.items():
            name = task_name(task)
            named[name] = named.get(name, 0.0) + cpu
        top = sorted(named.items(), key=lambda kv: -kv[1])
        line = f"{now:.3f}\t" + ",".join(f"{n}={c * 1e3:.2f}" for n, c in top) + "\n"
        if len(line) <= self.tasks_room:
            self.tasks_room -= len(line)
            self.tasks_out.write(line)
        self.win_tasks, self.loop_cpu, self.tasks_flushed = {}, 0.0, now


def trace_memory(out: str, every_s: float = 5.0) -> None:
    """Every ``every_s``, append the 12 largest allocation sites still alive to ``out``
    (``ISTHMUS_TRACEMALLOC=OUT``: diagnosis only, tracing slows the gateway down a lot)."""
    import threading
    import tracemalloc

    tracemalloc.start(1)

    def dump() -> None:
        while True:
            time.sleep(every_s)
            snap = tracemalloc.take_snapshot()
            top = snap.statistics("lineno")[:12]
            total = sum(s.size for s in snap.statistics("filename"))
            with open(out, "a", encoding="utf-8") as f:
                f.write(f"== {time.time():.0f} traced {total / 2**20:.0f} MB\n")
                for stat in top:
                    f.write(f"{stat.size / 2**20:8.1f} MB {stat.count:>9} {stat.traceback}\n")

    threading.Thread(target=dump, daemon=True).start()


def set_heap_budget(budget: float) -> None:
    """Make ``budget`` the default GC pass budget of every heap keeper this process makes."""
    import discovery.heap

    defaults = discovery.heap.HeapKeeper.__init__.__defaults__
    assert defaults is not None
    discovery.heap.HeapKeeper.__init__.__defaults__ = (budget, *defaults[1:])


def install(path: str) -> None:
    """Add a :class:`StallProbe` writing to ``path`` to every later ``trio.run`` of this
    process (one probe, made at the first run: a process that never runs trio writes nothing)."""
    real_run = trio.run
    probes: list[StallProbe] = []

    def run(*args: Any, **kwargs: Any) -> Any:
        if not probes:
            probes.append(StallProbe(path))
            probes[0].watch_slow_steps(path + ".slow")
        kwargs["instruments"] = [*kwargs.get("instruments", ()), probes[0]]
        return real_run(*args, **kwargs)

    trio.run = run  # type: ignore[assignment]


def hand_down_worker_lag(out_dir: str) -> None:
    """Make the worker processes this process will start (they inherit its environment) load
    ``worker_lag/sitecustomize.py``, which probes them into ``out_dir``."""
    os.makedirs(out_dir, exist_ok=True)
    os.environ[WORKER_LAG_ENV] = out_dir
    old = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = WORKER_LAG_PATH + (os.pathsep + old if old else "")


def main() -> None:
    path, rest = sys.argv[1], sys.argv[2:]
    if rest[:1] == ["--worker-lag"]:
        hand_down_worker_lag(rest[1])
        rest = rest[2:]
    if os.environ.get("ISTHMUS_TRACEMALLOC"):
        trace_memory(os.environ["ISTHMUS_TRACEMALLOC"])
    if rest[:1] == ["--heap-budget"]:
        set_heap_budget(float(rest[1]))
        rest = rest[2:]
    if rest[:1] == ["--decoder"]:
        from discovery.sources import consul_decode

        if rest[1] not in consul_decode.DECODERS:
            raise SystemExit(f"--decoder: one of {sorted(consul_decode.DECODERS)}")
        consul_decode.DEFAULT_DECODER = rest[1]
        rest = rest[2:]
    if rest[:1] == ["--snapshot-coalesce"]:
        from gateway.workers import supervise

        supervise.SNAPSHOT_COALESCE_S = float(rest[1])
        rest = rest[2:]
    if rest[:1] != ["-m"] or len(rest) < 2:
        raise SystemExit("usage: lag_probe.py OUT -m MODULE [ARGS...]")
    install(path)
    sys.argv = [rest[1], *rest[2:]]
    runpy.run_module(rest[1], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
