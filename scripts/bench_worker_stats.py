#!/usr/bin/env python3
"""What a scrape of a site of worker processes costs: a worker's report, the supervisor's merge.

Each "process" is a real :class:`~gateway.observe.observer.Observer` whose every counter and
histogram holds ``--series`` label sets (5000 is the registry's cap: the worst case).  For
each worker it measures the report (``export_families``), its pickled size and the time to
pickle and unpickle it (what crosses the control channel); then the supervisor's merged
``/metrics`` (its own registry and the workers' reports, ``merged_metrics_steps``): total CPU,
the longest step between two pauses (what the admin loop stalls for), and the text size;
beside it, one registry's own ``render_steps`` for comparison.

    .venv/bin/python scripts/bench_worker_stats.py                       # 100 and 5000 series
    .venv/bin/python scripts/bench_worker_stats.py --series 5000 --workers 4

In-process, no sockets, no child processes.
"""

from __future__ import annotations

import argparse
import pickle
import sys
import time
from collections.abc import Generator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gateway.observe.merge import merged_metrics_steps
from gateway.observe.observer import Observer
from gateway.workers.stats import WorkerStats


def counted(series: int) -> Observer:
    """An observer with ``series`` label sets in each of its counters and histograms."""
    obs = Observer(
        local_site="a",
        mesh_domain="isthmus",
        sites=["b"],
        known=lambda _s: True,
        clock=lambda: 1.0,
    )
    for i in range(series):
        labels = ("origin", "http", f"svc-{i}.default", "b", "none")
        obs.requests.inc(labels)
        obs.responses.inc((*labels, "2xx"))
        obs.bytes_in.inc(labels, 10)
        obs.bytes_out.inc(labels, 10)
        obs.head_seconds.observe(labels, 0.01)
        obs.total_seconds.observe(labels, 0.02)
        obs.failovers.inc(labels)
        obs.retries.inc(labels)
    return obs


def stepped(steps: Generator[int, None, Any]) -> tuple[float, float, int, Any]:
    """Total and longest-step CPU seconds of ``steps``, how many pauses it made, its result."""
    total = longest = 0.0
    pauses = 0
    while True:
        t = time.process_time()
        try:
            next(steps)
        except StopIteration as stop:
            spent = time.process_time() - t
            return total + spent, max(longest, spent), pauses, stop.value
        spent = time.process_time() - t
        total += spent
        longest = max(longest, spent)
        pauses += 1


def run(series: int, workers: int) -> None:
    reports = []
    for index in range(workers):
        obs = counted(series)
        t = time.process_time()
        report = WorkerStats(
            index=index, pid=1000 + index, families=tuple(obs.registry.export_families())
        )
        export_s = time.process_time() - t
        t = time.process_time()
        data = pickle.dumps(report)
        pickle_s = time.process_time() - t
        t = time.process_time()
        reports.append(pickle.loads(data))
        unpickle_s = time.process_time() - t
    supervisor = counted(series)
    merged = merged_metrics_steps(supervisor.registry, reports)
    merged_s, merged_step, pauses, text = stepped(merged)
    size = len(text.body)
    own_s, own_step, _, _ = stepped(supervisor.registry.render_steps())
    print(
        f"{series} series/family, {workers} workers: report {export_s * 1e3:.1f} ms, "
        f"{len(data) / 1024:.0f} KiB pickled in {pickle_s * 1e3:.1f} ms, unpickled in "
        f"{unpickle_s * 1e3:.1f} ms; merged /metrics {merged_s * 1e3:.0f} ms CPU in "
        f"{pauses + 1} steps, longest {merged_step * 1e3:.1f} ms, {size / 1024:.0f} KiB; "
        f"one registry's render {own_s * 1e3:.0f} ms, longest step {own_step * 1e3:.0f} ms"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, nargs="*", default=[100, 5000])
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for series in args.series:
        run(series, args.workers)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
