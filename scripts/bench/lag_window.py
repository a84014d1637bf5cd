"""Reading the lag probe's TSV files (``scripts/bench/lag_probe.py``): the worst figures of a
time window, for one process and over a gateway's worker processes.  BENCH-ONLY.

Pure functions of the files' text: ``bench_stall.py``'s loop-stall columns are only as good
as this, so tests/scripts/test_bench_lag.py checks them on hand-written lines.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

#: ``worker-<index>-<pid>.tsv``, as ``worker_lag/sitecustomize.py`` names a worker's file.
WORKER_FILE = re.compile(r"worker-(\d+)-(\d+)\.tsv")
#: Lines past a window's end still counted: a line sums the 100 ms *before* its time stamp.
LATE_S = 0.2


def window(path: Path, start: float, end: float) -> dict[str, Any]:
    """Worst stall figures of the lag probe's lines within [start, end] (wall time);
    ``lines``: how many lines fell in it (0: the process wrote nothing then)."""
    step = batch = gcmax = 0.0
    task = ""
    rss = 0
    wall = 0.0
    lines = 0
    gc_total = 0.0
    gc_full = 0
    for line in path.read_text().splitlines():
        parts = line.split("\t")
        if len(parts) < 7 or not start <= float(parts[0]) <= end + LATE_S:
            continue
        lines += 1
        rss = int(parts[5])
        wall = max(wall, float(parts[6]))
        if float(parts[1]) > step:
            step = float(parts[1])
            task = f"{parts[7] if len(parts) > 7 else '?'} | {parts[4]}"
        batch = max(batch, float(parts[2]))
        gcmax = max(gcmax, float(parts[3]))
        if len(parts) > 9:  # files of probes before the GC totals have no such columns
            gc_total += float(parts[8])
            gc_full += int(parts[9])
    return {
        "stall_ms": step,
        "batch_ms": batch,
        "gc_ms": gcmax,
        "task": task,
        "rss_mb": rss,
        "batch_wall_ms": wall,
        "lines": lines,
        "gc_total_ms": gc_total,
        "gc_full": gc_full,
    }


def worker_files(directory: Path) -> dict[int, Path]:
    """Each worker's TSV in ``directory``, by pid."""
    found: dict[int, Path] = {}
    for path in sorted(directory.glob("worker-*.tsv")):
        match = WORKER_FILE.fullmatch(path.name)
        if match:
            found[int(match.group(2))] = path
    return found


def workers_window(directory: Path, start: float, end: float) -> dict[str, Any]:
    """The worst figures over every worker that wrote lines within [start, end], each figure
    its own worst (the longest stall and the longest GC pass may be two workers'), but
``gc_total_ms``/``gc_full`` are summed over the workers; ``task`` is
    that of the longest step, named with its worker's pid; ``rss_mb``: each worker's, by pid;
    ``workers``: how many workers wrote lines then."""
    worst: dict[str, Any] = {
        "stall_ms": 0.0,
        "batch_ms": 0.0,
        "gc_ms": 0.0,
        "task": "",
        "batch_wall_ms": 0.0,
        "rss_mb": {},
        "workers": 0,
        "gc_total_ms": 0.0,
        "gc_full": 0,
    }
    for pid, path in worker_files(directory).items():
        one = window(path, start, end)
        if not one["lines"]:
            continue
        worst["workers"] += 1
        worst["rss_mb"][pid] = one["rss_mb"]
        for key in ("batch_ms", "gc_ms", "batch_wall_ms"):
            worst[key] = max(worst[key], one[key])
        worst["gc_total_ms"] += one["gc_total_ms"]
        worst["gc_full"] += one["gc_full"]
        if one["stall_ms"] >= worst["stall_ms"]:
            worst["stall_ms"] = one["stall_ms"]
            worst["task"] = f"[{pid}] {one['task']}"
    return worst


def task_cpu(path: Path, start: float, end: float) -> dict[str, float]:
    """CPU ms by task name from a probe's ``.tasks`` lines within [start, end] (the lines of
    ``lag_probe.py``'s ``flush_tasks``); a missing file counts nothing."""
    totals: dict[str, float] = {}
    if not path.exists():
        return totals
    for line in path.read_text().splitlines():
        stamp, _, rest = line.partition("\t")
        try:
            if not start < float(stamp) <= end + 1.0:
                continue
        except ValueError:
            continue
        for item in rest.split(","):
            name, _, ms = item.rpartition("=")
            if name:
                totals[name] = totals.get(name, 0.0) + float(ms)
    return totals


def workers_task_cpu(directory: Path, start: float, end: float) -> dict[str, float]:
    """:func:`task_cpu` summed over every worker's file in ``directory``."""
    totals: dict[str, float] = {}
    for path in worker_files(directory).values():
        for name, ms in task_cpu(path.with_name(path.name + ".tasks"), start, end).items():
            totals[name] = totals.get(name, 0.0) + ms
    return totals
