"""A small metrics registry and its Prometheus text exposition (pure, no I/O).

Why not ``prometheus-client``: its metrics take a lock and build a child object per label
set on every update; here an update is one dict lookup and a float add, which is what the
data path can afford per request (``scripts/bench_observe.py`` measures it).  A caller that
updates the same label set on every request resolves it once (:meth:`Counter.cell`,
:meth:`Histogram.series`) and then only adds: no label tuple, no lookup, no bound check per
update.  The exposition is computed at scrape time only.  The text
format (version 0.0.4) is small; the tests check it with prometheus-client's own parser.

:class:`FamilySamples` is the same data as plain values (one family's samples, picklable):
what a worker process sends its supervisor, which sums them with its own
(:mod:`gateway.observe.merge`) and renders the sum with :meth:`FamilySamples.lines`.

Label sets are bounded twice: the data path passes only bounded values (see
:mod:`gateway.observe.observer`: services not in the catalog become ``other``), and every
family holds at most ``max_series`` label sets -- past that, new ones are counted under all
labels ``other``, so no input can grow memory or the scrape without bound.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from discovery.steps import Steps, complete

__all__ = [
    "LATENCY_BUCKETS",
    "OTHER",
    "Counter",
    "FamilySamples",
    "GaugeFamily",
    "Histogram",
    "HistogramSeries",
    "Registry",
]

OTHER = "other"
#: Seconds: from sub-millisecond local hops to the default 15 s route timeout and beyond.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 15.0)
DEFAULT_MAX_SERIES = 5000

Labels = tuple[str, ...]


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if math.isnan(value):
        return "NaN"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(value)


def _labels(names: Sequence[str], values: Labels, extra: str = "") -> str:
    parts = [f'{n}="{_escape_label(v)}"' for n, v in zip(names, values, strict=True)]
    if extra:
        parts.append(extra)
    return "{" + ",".join(parts) + "}" if parts else ""


class _Family:
    """Shared by counters and histograms: name, help, label names, the series cap."""

    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str], max_series: int) -> None:
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self.max_series = max_series
        self._other: Labels = (OTHER,) * len(self.labelnames)

    def _bounded(self, labels: Labels, known: Mapping[Labels, object]) -> Labels:
        if len(labels) != len(self.labelnames):
            raise ValueError(f"{self.name}: {len(self.labelnames)} label values expected")
        if labels in known or len(known) < self.max_series - 1:
            return labels
        return self._other

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def lines(self) -> list[str]:
        raise NotImplementedError


class Counter(_Family):
    """A monotonically increasing count per label set (names end in ``_total``)."""

    kind = "counter"

    def __init__(self, name: str, help: str, labelnames: Sequence[str], max_series: int) -> None:
        if not name.endswith("_total"):
            raise ValueError(f"counter {name} must end in _total")
        super().__init__(name, help, labelnames, max_series)
        #: per label set: a one-element list, the count (shared with :meth:`cell`'s callers).
        self._cells: dict[Labels, list[float]] = {}

    @property
    def values(self) -> dict[Labels, float]:
        """Label set -> count (a copy, for reading)."""
        return {labels: cell[0] for labels, cell in self._cells.items()}

    def cell(self, labels: Labels) -> list[float]:
        """The one-element count of ``labels`` (bounded: past ``max_series`` the ``other``
        set's); add to ``cell[0]`` to count.  For a hot path that counts the same label set
        again and again: resolve it once, then each update is one addition."""
        cells = self._cells
        cell = cells.get(labels)
        if cell is None:
            labels = self._bounded(labels, cells)
            cell = cells.setdefault(labels, [0.0])
        return cell

    def inc(self, labels: Labels, amount: float = 1.0) -> None:
        self.cell(labels)[0] += amount

    def get(self, labels: Labels) -> float:
        cell = self._cells.get(labels)
        return 0.0 if cell is None else cell[0]

    def export(self) -> FamilySamples:
        """The family's samples now, as plain values."""
        cells = self._cells
        return FamilySamples(
            self.name,
            self.help,
            self.kind,
            self.labelnames,
            tuple((labels, (cells[labels][0],)) for labels in sorted(cells)),
        )

    def lines(self) -> list[str]:
        out = self.header()
        cells = self._cells
        for labels in sorted(cells):
            value = _number(cells[labels][0])
            out.append(f"{self.name}{_labels(self.labelnames, labels)} {value}")
        return out


class HistogramSeries:
    """One label set of a :class:`Histogram`, resolved once (:meth:`Histogram.series`):
    an observation is a bisect and two additions."""

    __slots__ = ("_buckets", "_row")

    def __init__(self, buckets: tuple[float, ...], row: list[float]) -> None:
        self._buckets = buckets
        self._row = row

    def observe(self, value: float) -> None:
        row = self._row
        row[bisect_left(self._buckets, value)] += 1
        row[-1] += value


class Histogram(_Family):
    """Observations per label set in fixed buckets (cumulative on output), with sum and
    count."""

    kind = "histogram"

    def __init__(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str],
        max_series: int,
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> None:
        super().__init__(name, help, labelnames, max_series)
        self.buckets = tuple(sorted(buckets))
        #: per label set: one count per bucket, then +Inf's own, then the sum.
        self.values: dict[Labels, list[float]] = {}

    def _row(self, labels: Labels) -> list[float]:
        values = self.values
        row = values.get(labels)
        if row is None:
            labels = self._bounded(labels, values)
            row = values.setdefault(labels, [0.0] * (len(self.buckets) + 2))
        return row

    def observe(self, labels: Labels, value: float) -> None:
        row = self._row(labels)
        row[bisect_left(self.buckets, value)] += 1
        row[-1] += value

    def series(self, labels: Labels) -> HistogramSeries:
        """``labels`` resolved once (bounded like :meth:`observe`), for a hot path."""
        return HistogramSeries(self.buckets, self._row(labels))

    def count(self, labels: Labels) -> int:
        row = self.values.get(labels)
        return 0 if row is None else int(sum(row[:-1]))

    def export(self) -> FamilySamples:
        """The family's samples now, as plain values (each row: the per-bucket counts, not
        cumulative, then +Inf's own, then the sum)."""
        values = self.values
        return FamilySamples(
            self.name,
            self.help,
            self.kind,
            self.labelnames,
            tuple((labels, tuple(values[labels])) for labels in sorted(values)),
            self.buckets,
        )

    def lines(self) -> list[str]:
        out = self.header()
        names = self.labelnames
        for labels in sorted(self.values):
            row = self.values[labels]
            running = 0.0
            for bound, n in zip((*self.buckets, math.inf), row[:-1], strict=True):
                running += n
                le = 'le="+Inf"' if bound == math.inf else f'le="{float(bound)!r}"'
                out.append(f"{self.name}_bucket{_labels(names, labels, le)} {_number(running)}")
            out.append(f"{self.name}_sum{_labels(names, labels)} {_number(row[-1])}")
            out.append(f"{self.name}_count{_labels(names, labels)} {_number(running)}")
        return out


@dataclass(frozen=True, slots=True)
class GaugeFamily:
    """A gauge read at scrape time from live state (links, catalog, identity): it costs the
    data path nothing."""

    name: str
    help: str
    labelnames: tuple[str, ...]
    samples: tuple[tuple[Labels, float], ...]
    #: "counter" for a count kept by the live state itself (links established).
    kind: str = "gauge"

    def lines(self) -> list[str]:
        out = [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]
        for labels, value in self.samples:
            out.append(f"{self.name}{_labels(self.labelnames, labels)} {_number(value)}")
        return out

    def export(self) -> FamilySamples:
        return FamilySamples(
            self.name,
            self.help,
            self.kind,
            self.labelnames,
            tuple((labels, (value,)) for labels, value in self.samples),
        )


@dataclass(frozen=True, slots=True)
class FamilySamples:
    """One family's samples as plain values: what crosses from a worker process to its
    supervisor (picklable, immutable), and what the supervisor renders after merging.

    ``kind`` is ``counter``, ``gauge`` or ``histogram``.  Each sample is a label set and its
    values: one value for a counter or a gauge; for a histogram, one count per bucket of
    ``buckets`` (not cumulative), then the count above the last bucket, then the sum -- the
    row :class:`Histogram` keeps, so rows of two processes add element by element.
    """

    name: str
    help: str
    kind: str
    labelnames: tuple[str, ...]
    samples: tuple[tuple[Labels, tuple[float, ...]], ...]
    buckets: tuple[float, ...] = ()

    def lines(self) -> list[str]:
        """The Prometheus text of the family, exactly as its live family renders it."""
        return [*self.header(), *self.sample_lines(self.samples)]

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {_escape_help(self.help)}", f"# TYPE {self.name} {self.kind}"]

    def sample_lines(self, samples: Sequence[tuple[Labels, tuple[float, ...]]]) -> list[str]:
        """The lines of ``samples`` (some of this family's: a large family is rendered in
        parts, the header once)."""
        out: list[str] = []
        name, names = self.name, self.labelnames
        if self.kind != "histogram":
            for labels, values in samples:
                out.append(f"{name}{_labels(names, labels)} {_number(values[0])}")
            return out
        bounds = (*self.buckets, math.inf)
        for labels, row in samples:
            running = 0.0
            for bound, n in zip(bounds, row[:-1], strict=True):
                running += n
                le = 'le="+Inf"' if bound == math.inf else f'le="{float(bound)!r}"'
                out.append(f"{name}_bucket{_labels(names, labels, le)} {_number(running)}")
            out.append(f"{name}_sum{_labels(names, labels)} {_number(row[-1])}")
            out.append(f"{name}_count{_labels(names, labels)} {_number(running)}")
        return out


Collector = Callable[[], Iterable[GaugeFamily]]
SlicedCollector = Callable[[], Steps[Iterable[GaugeFamily]]]
"""A collector whose work grows with the state it reads (the catalog's endpoints): a
resumable computation (:mod:`discovery.steps`) that returns its gauges."""


def _at_once(collect: Collector) -> Steps[Iterable[GaugeFamily]]:
    yield from ()
    return collect()


class Registry:
    """The families of one gateway, rendered in registration order."""

    def __init__(self, *, max_series: int = DEFAULT_MAX_SERIES) -> None:
        self.max_series = max_series
        self._families: list[_Family] = []
        self._collectors: list[SlicedCollector] = []

    def counter(self, name: str, help: str, labelnames: Sequence[str]) -> Counter:
        family = Counter(name, help, labelnames, self.max_series)
        self._families.append(family)
        return family

    def histogram(
        self,
        name: str,
        help: str,
        labelnames: Sequence[str],
        buckets: Sequence[float] = LATENCY_BUCKETS,
    ) -> Histogram:
        family = Histogram(name, help, labelnames, self.max_series, buckets)
        self._families.append(family)
        return family

    def collector(self, collect: Collector) -> None:
        """Add gauges computed at scrape time."""
        self._collectors.append(lambda: _at_once(collect))

    def sliced_collector(self, collect: SlicedCollector) -> None:
        """Add gauges computed at scrape time in slices (:meth:`render_steps` pauses between
        them, so a scrape of a 100k-endpoint catalog does not stall the loop)."""
        self._collectors.append(collect)

    def export_families(self) -> list[FamilySamples]:
        """The counters and histograms (not the collectors' gauges), as plain values."""
        out: list[FamilySamples] = []
        for family in self._families:
            if isinstance(family, Counter | Histogram):
                out.append(family.export())
        return out

    def export_steps(self) -> Steps[list[FamilySamples]]:
        """Every family as plain values, in :meth:`render`'s order: the counters and
        histograms, then each collector's gauges (pausing like :meth:`render_steps`)."""
        out = self.export_families()
        for collect in self._collectors:
            families = yield from collect()
            out.extend(gauge.export() for gauge in families)
            yield 1
        return out

    def render(self) -> str:
        """The Prometheus text exposition (format 0.0.4) of every family."""
        return complete(self.render_steps())

    def render_steps(self) -> Steps[str]:
        """:meth:`render`, pausing after each collector and within the sliced ones."""
        lines: list[str] = []
        for family in self._families:
            lines.extend(family.lines())
        for collect in self._collectors:
            families = yield from collect()
            for gauge in families:
                lines.extend(gauge.lines())
            yield 1
        return "\n".join(lines) + "\n"
