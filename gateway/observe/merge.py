"""One site's metrics and links from several processes: the supervisor's and its workers'.

With ``[site] workers = N`` a gateway is a supervisor process (discovery, federation, admin
API) and N worker processes (the data plane, docs/workers.md).  Each worker counts what it
serves in its own :class:`~gateway.observe.metrics.Registry` and sends the samples to the
supervisor on request (:class:`~gateway.workers.stats.WorkerStats`); the supervisor's
``/metrics`` and ``/links`` show the site as one gateway.  Pure functions of those samples.

How each family is merged (the rule is chosen by kind, then by name):

* **Counters and histograms are summed** per label set over the supervisor and every worker
  (histogram rows bucket by bucket: every process uses the same buckets).  A request is
  counted once, by the process that served it, so the sum is the site's count.  The counts of
  a worker that was replaced (crashed and restarted) are kept by the supervisor
  (``retired``, see :class:`gateway.workers.stats.StatsBook`), so a sum never goes down.
* **Gauges the supervisor owns** (imports, catalog, sources, identity, fleet, export:
  ``SUPERVISOR_GAUGES``) come from the supervisor alone: a worker runs no discovery and no
  federation, it holds copies the supervisor sent it, and showing them again would only
  count the same endpoint N+1 times.
* **Gauges of amounts held now** (open streams, connections, buffer bytes, mirrors in
  flight: ``SUMMED_GAUGES``) are summed: each process holds its own share and the site holds
  the total.  A buffer budget is per process, so the site's budget is the sum too.
* **Every other gauge is labelled** with ``worker`` (the worker's index, ``supervisor`` for
  the supervisor's own): link up, RTT, failed attempts, replicas up, the budget's peak.  These
  are states of one process's links (each worker dials its own) or maxima, which a sum or an
  average would misstate: ``isthmus_link_up{peer="b"}`` is 0 for the one worker that lost
  its link to ``b`` while the others are up, which is what an operator must see.  An unknown
  gauge is labelled too: a label is never wrong, a sum may be.

Beside them, ``isthmus_worker_requests_total{worker}`` (each worker's requests: are they all
serving?), ``isthmus_worker_in_flight{worker,kind}`` and ``isthmus_workers_reporting`` (how
many workers' samples this scrape holds).

Label sets stay bounded: a summed family keeps at most the registry's ``max_series`` label
sets (the rest are added into the all-``other`` set, as a single registry does); a labelled
one holds at most N+1 times the supervisor's, each bounded.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from discovery.steps import Steps, complete
from gateway.admin.server import Text
from gateway.observe.metrics import DEFAULT_MAX_SERIES, OTHER, FamilySamples, Labels, Registry

log = logging.getLogger("isthmus.observe")

__all__ = [
    "SUMMED_GAUGES",
    "SUPERVISOR_GAUGES",
    "ProcessStats",
    "links_with_workers",
    "merge_families",
    "merge_families_steps",
    "merged_metrics_steps",
    "reports",
    "rule_of",
]

#: Samples rendered per step (a histogram sample is ~17 lines): a few ms of CPU.
RENDER_SLICE = 200

#: The label a per-process gauge gets; the supervisor's own samples carry ``SUPERVISOR``.
WORKER_LABEL = "worker"
SUPERVISOR = "supervisor"

#: Gauge name prefixes of the state the supervisor owns (workers hold copies of it).
SUPERVISOR_GAUGES = (
    "isthmus_import_",
    "isthmus_catalog_",
    "isthmus_source_",
    "isthmus_svid_",
    "isthmus_fleet_",
    "isthmus_export_",
)

#: Gauges of amounts each process holds now: the site holds their sum.
SUMMED_GAUGES = frozenset(
    {
        "isthmus_link_open_streams",
        "isthmus_link_connections",
        "isthmus_buffer_budget_bytes",
        "isthmus_buffer_budget_reserved_bytes",
        "isthmus_route_mirrors_in_flight",
        "isthmus_route_mirror_buffer_bytes",
    }
)


@runtime_checkable
class ProcessStats(Protocol):
    """What the merge reads of one worker's report (:class:`gateway.workers.stats.WorkerStats`)."""

    @property
    def index(self) -> int: ...

    @property
    def families(self) -> tuple[FamilySamples, ...]: ...

    @property
    def links(self) -> Mapping[str, Any]: ...

    @property
    def in_flight(self) -> Mapping[str, int]: ...

    @property
    def pid(self) -> int: ...


def reports(stats: Iterable[object]) -> list[tuple[str, ProcessStats]]:
    """The worker reports in ``stats`` by index, each with its ``worker`` label value: the
    index, or ``index/pid`` when two reports claim one index (a replaced worker's last report
    beside its successor's: two processes, never one series twice).  Anything that is not a
    report (a reply from another version of the program) is left out and logged."""
    rows: list[ProcessStats] = []
    for st in stats:
        if isinstance(st, ProcessStats):
            rows.append(st)
        else:
            log.warning("a worker's stats reply is not a report: %s", type(st).__name__)
    rows.sort(key=lambda s: (s.index, s.pid))
    seen: dict[int, int] = {}
    for st in rows:
        seen[st.index] = seen.get(st.index, 0) + 1
    return [(str(st.index) if seen[st.index] == 1 else f"{st.index}/{st.pid}", st) for st in rows]


def rule_of(family: FamilySamples) -> str:
    """``sum``, ``supervisor`` or ``label``: how ``family`` is merged (module docstring)."""
    if family.kind in ("counter", "histogram"):
        return "sum"
    if family.name.startswith(SUPERVISOR_GAUGES):
        return "supervisor"
    if family.name in SUMMED_GAUGES:
        return "sum"
    return "label"


def _add(total: dict[Labels, list[float]], family: FamilySamples, max_series: int) -> None:
    other: Labels = (OTHER,) * len(family.labelnames)
    for labels, values in family.samples:
        row = total.get(labels)
        if row is None:
            if len(total) >= max_series - 1 and labels != other:
                labels = other
                row = total.get(labels)
            if row is None:
                total[labels] = list(values)
                continue
        if len(row) != len(values):
            continue  # a histogram with other buckets: not this program's, never summed
        for i, v in enumerate(values):
            row[i] += v


def merge_families(
    own: Sequence[FamilySamples],
    workers: Sequence[tuple[str, Sequence[FamilySamples]]],
    *,
    retired: Sequence[FamilySamples] = (),
    max_series: int = DEFAULT_MAX_SERIES,
) -> list[FamilySamples]:
    """The site's families: ``own`` (the supervisor's) merged with each worker's (named by its
    label value), plus the ``retired`` counts of replaced workers (summed families only), by
    the rules of the module docstring.  Order: the supervisor's families, then those only
    workers have, in the order first seen; each family once."""
    return complete(merge_families_steps(own, workers, retired=retired, max_series=max_series))


def merge_families_steps(
    own: Sequence[FamilySamples],
    workers: Sequence[tuple[str, Sequence[FamilySamples]]],
    *,
    retired: Sequence[FamilySamples] = (),
    max_series: int = DEFAULT_MAX_SERIES,
) -> Steps[list[FamilySamples]]:
    """:func:`merge_families`, pausing after each family (the largest, a histogram at its
    series cap in three processes, is ~20 ms of CPU)."""
    order: list[str] = []
    first: dict[str, FamilySamples] = {}
    parts: dict[str, list[tuple[str, FamilySamples]]] = {}
    for who, families in [(SUPERVISOR, own), *workers]:
        for fam in families:
            if fam.name not in first:
                order.append(fam.name)
                first[fam.name] = fam
            elif (fam.kind, fam.labelnames, fam.buckets) != (
                first[fam.name].kind,
                first[fam.name].labelnames,
                first[fam.name].buckets,
            ):
                continue  # another shape under the same name: never merged into it
            parts.setdefault(fam.name, []).append((who, fam))
    late = {fam.name: fam for fam in retired}
    out: list[FamilySamples] = []
    for name in order:
        head = first[name]
        rule = rule_of(head)
        if rule == "supervisor":
            if parts[name][0][0] == SUPERVISOR:
                out.append(parts[name][0][1])
            continue
        if rule == "label":
            samples = tuple(
                ((*labels, who), values)
                for who, fam in parts[name]
                for labels, values in fam.samples
            )
            out.append(_with(head, samples, (*head.labelnames, WORKER_LABEL)))
            yield len(samples)
            continue
        total: dict[Labels, list[float]] = {}
        for _who, fam in parts[name]:
            _add(total, fam, max_series)
        gone = late.get(name)
        if gone is not None and (gone.kind, gone.labelnames, gone.buckets) == (
            head.kind,
            head.labelnames,
            head.buckets,
        ):
            _add(total, gone, max_series)
        samples = tuple((labels, tuple(total[labels])) for labels in sorted(total))
        out.append(_with(head, samples, head.labelnames))
        yield len(samples)
    return out


def _with(
    head: FamilySamples,
    samples: tuple[tuple[Labels, tuple[float, ...]], ...],
    labelnames: tuple[str, ...],
) -> FamilySamples:
    return FamilySamples(head.name, head.help, head.kind, labelnames, samples, head.buckets)


def worker_families(rows: Sequence[tuple[str, ProcessStats]]) -> list[FamilySamples]:
    """Per-worker figures: its requests, what it has in flight, how many workers reported
    (``rows``: :func:`reports`)."""
    requests = []
    for who, st in rows:
        counted = sum(
            values[0]
            for fam in st.families
            if fam.name == "isthmus_requests_total"
            for _labels, values in fam.samples
        )
        requests.append(((who,), (counted,)))
    in_flight = tuple(
        ((who, kind), (float(n),)) for who, st in rows for kind, n in sorted(st.in_flight.items())
    )
    return [
        FamilySamples(
            "isthmus_worker_requests_total",
            "Requests and tunnels that ended in each worker process (since it started).",
            "counter",
            (WORKER_LABEL,),
            tuple(requests),
        ),
        FamilySamples(
            "isthmus_worker_in_flight",
            "What each worker process has in flight now, by kind (link_streams: streams open "
            "on its links; mirrors: mirror copies running; upstream_h2: h2 connections to "
            "endpoints; upstream_idle_h1: idle HTTP/1.1 connections kept for reuse).",
            "gauge",
            (WORKER_LABEL, "kind"),
            in_flight,
        ),
        FamilySamples(
            "isthmus_workers_reporting",
            "Worker processes whose samples this scrape holds.",
            "gauge",
            (),
            (((), (float(len(rows)),)),),
        ),
    ]


def merged_metrics_steps(
    registry: Registry,
    stats: Iterable[object],
    *,
    retired: Sequence[FamilySamples] = (),
) -> Steps[Text]:
    """The supervisor's ``/metrics`` answer: its own registry (exported in slices, like
    :meth:`Registry.render_steps`) merged with its workers' reports ``stats``
    (:class:`ProcessStats`; anything else is left out) and the ``retired`` counts of
    replaced workers."""
    rows = reports(stats)
    own = yield from registry.export_steps()
    merged = yield from merge_families_steps(
        own,
        [(who, st.families) for who, st in rows],
        retired=retired,
        max_series=registry.max_series,
    )
    lines: list[str] = []
    for fam in [*merged, *worker_families(rows)]:
        lines.extend(fam.header())
        for start in range(0, len(fam.samples), RENDER_SLICE):
            part = fam.samples[start : start + RENDER_SLICE]
            lines.extend(fam.sample_lines(part))
            yield len(part)
    return Text("\n".join(lines) + "\n", "text/plain; version=0.0.4; charset=utf-8")


def links_with_workers(status: Mapping[str, Any], stats: Iterable[object]) -> dict[str, Any]:
    """The supervisor's ``/links`` (``Peering.status()``: its own links, the primary ones)
    with, per peer site, ``workers``: each worker's links to that site (``up``, how many of
    the site's replicas it reaches, its open streams, its link rows) and ``workers_up``."""
    rows = reports(stats)
    out: dict[str, Any] = {}
    for site, entry in status.items():
        per_worker = []
        for _who, st in rows:
            mine = st.links.get(site) or {}
            per_worker.append(
                {
                    "worker": st.index,
                    "pid": st.pid,
                    "up": bool(mine.get("up")),
                    "replicas_up": mine.get("replicas_up", 0),
                    "open_streams": mine.get("open_streams", 0),
                    "last_error": mine.get("last_error"),
                    "links": list(mine.get("links", ())),
                }
            )
        out[site] = {
            **entry,
            "workers": per_worker,
            "workers_up": sum(1 for w in per_worker if w["up"]),
        }
    return out
