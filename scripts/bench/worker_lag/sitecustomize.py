"""Probe the event loop of every gateway worker process.  BENCH-ONLY.

Python imports ``sitecustomize`` at start-up from the first ``sys.path`` entry that has one, so
a process whose ``PYTHONPATH`` names this directory runs this file before its own code.
``scripts/bench/lag_probe.py --worker-lag DIR`` puts it there for the gateway it wraps; the
supervisor starts its workers as ``python -m gateway.cli worker ...`` with its environment, so
each worker loads this file and, if ``$ISTHMUS_BENCH_WORKER_LAG`` names a directory, installs
``lag_probe``'s stall probe in its ``trio.run``, writing ``DIR/worker-<index>-<pid>.tsv``
(a restarted worker writes a new file); if ``$ISTHMUS_BENCH_WORKER_HEAP_BUDGET`` is set,
it becomes the GC pass budget of the worker's heap keeper.  Any other process (the supervisor,
a test run that inherits the variable) is left alone.

Bounded: at most ``MAX_FILES`` files in ``DIR`` (a worker that keeps crashing and restarting
stops adding more), each capped by ``lag_probe.MAX_BYTES``.  A probe that cannot be installed
says so on stderr (the worker's log) and the worker runs unprobed: ``bench_stall.py`` refuses
to report worker figures for a worker without a file.
"""

from __future__ import annotations

import importlib.util
import os
import sys

ENV = "ISTHMUS_BENCH_WORKER_LAG"
BUDGET_ENV = "ISTHMUS_BENCH_WORKER_HEAP_BUDGET"
MAX_FILES = 256


def worker_index(argv: list[str]) -> str | None:
    """The ``--index`` of a ``-m gateway.cli worker`` command line; None for any other."""
    for i in range(len(argv) - 2):
        if argv[i : i + 3] == ["-m", "gateway.cli", "worker"]:
            rest = argv[i + 3 :]
            if "--index" in rest[:-1]:
                index = rest[rest.index("--index") + 1]
                return index if index.isdigit() else None
            return None
    return None


def _install() -> None:
    out_dir = os.environ.get(ENV)
    if not out_dir:
        return
    index = worker_index(list(getattr(sys, "orig_argv", ())))
    if index is None:
        return
    if len(os.listdir(out_dir)) >= MAX_FILES:
        print(f"worker lag probe: {out_dir} has {MAX_FILES} files, not probing", file=sys.stderr)
        return
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location(
        "isthmus_bench_lag_probe", os.path.join(os.path.dirname(here), "lag_probe.py")
    )
    if spec is None or spec.loader is None:
        raise ImportError("lag_probe.py not found")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    probe.install(os.path.join(out_dir, f"worker-{index}-{os.getpid()}.tsv"))
    budget = os.environ.get(BUDGET_ENV)
    if budget:
        probe.set_heap_budget(float(budget))


try:
    _install()
except Exception as exc:  # a bench aid must never keep a worker from running
    print(f"worker lag probe not installed: {exc!r}", file=sys.stderr)
