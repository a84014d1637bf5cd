"""Recent traffic rates between sites, from the metrics' counters (pure, no I/O).

The overlay map shows how much traffic goes from this site to each peer *now*, but the metrics
only count since start.  A rate is the difference of two counts divided by the time between
them, so :class:`RateWindow` keeps a few timestamped samples of the per-site totals and answers
the rate over the last ``window_s`` seconds.  Why here and not in the page: several browsers
(or none) may poll at any pace; a server-side window gives every viewer the same numbers, and
its size is bounded whatever they do (a sample is kept at most every ``min_step_s``, at most
``max_samples`` of them).

What one gateway can tell from its own counters (see ``docs/metrics.md``): on the **origin**
side, ``site`` is the site that answered, so the totals per ``site`` are this site's traffic to
each peer (and to itself: local callers served locally); on the **destination** side every
request came from some peer over a link, counted together as ``from_peers``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from gateway.observe.metrics import Counter, FamilySamples, Labels

__all__ = [
    "FROM_PEERS",
    "RateWindow",
    "SiteTotals",
    "TrafficRate",
    "add_totals",
    "families_site_totals",
    "site_totals",
]

#: The counters :func:`site_totals` reads, by family name (requests, then body bytes).
REQUESTS_FAMILY = "isthmus_requests_total"
BYTES_FAMILIES = ("isthmus_request_bytes_total", "isthmus_response_bytes_total")

#: The key under which requests that peers sent to this site are summed.
FROM_PEERS = "from_peers"


@dataclass(frozen=True, slots=True)
class SiteTotals:
    """Counts since start towards one site (or :data:`FROM_PEERS`)."""

    requests: float = 0.0
    bytes: float = 0.0  # request and response body bytes together

    def plus(self, requests: float, nbytes: float) -> SiteTotals:
        return SiteTotals(self.requests + requests, self.bytes + nbytes)


@dataclass(frozen=True, slots=True)
class TrafficRate:
    """Requests and body bytes per second over the last ``over_s`` seconds."""

    requests_per_s: float
    bytes_per_s: float
    over_s: float

    def json(self) -> dict[str, float]:
        return {
            "requests_per_s": round(self.requests_per_s, 3),
            "bytes_per_s": round(self.bytes_per_s, 1),
            "over_s": round(self.over_s, 3),
        }


def _side_site(labelnames: tuple[str, ...]) -> tuple[int, int]:
    return labelnames.index("side"), labelnames.index("site")


def site_totals(requests: Counter, bytes_in: Counter, bytes_out: Counter) -> dict[str, SiteTotals]:
    """Per destination site (origin side) and :data:`FROM_PEERS` (destination side), the
    requests and body bytes counted so far.  Linear in the counters' label sets, which the
    registry bounds (``max_series``)."""
    return _totals(
        [(requests.labelnames, requests.values.items())],
        [(c.labelnames, c.values.items()) for c in (bytes_in, bytes_out)],
    )


def families_site_totals(families: Iterable[FamilySamples]) -> dict[str, SiteTotals]:
    """:func:`site_totals` of counters exported as plain values (a worker's report, in
    worker mode: docs/workers.md); other families are skipped."""
    requests, nbytes = [], []
    for fam in families:
        if fam.kind != "counter":
            continue
        rows = ((labels, values[0]) for labels, values in fam.samples if values)
        if fam.name == REQUESTS_FAMILY:
            requests.append((fam.labelnames, rows))
        elif fam.name in BYTES_FAMILIES:
            nbytes.append((fam.labelnames, rows))
    return _totals(requests, nbytes)


def add_totals(into: dict[str, SiteTotals], more: Mapping[str, SiteTotals]) -> None:
    """Add ``more`` to ``into``, site by site (the totals of several processes)."""
    for site, t in more.items():
        into[site] = into.get(site, SiteTotals()).plus(t.requests, t.bytes)


Rows = Iterable[tuple[Labels, float]]


def _totals(
    requests: Iterable[tuple[tuple[str, ...], Rows]],
    nbytes: Iterable[tuple[tuple[str, ...], Rows]],
) -> dict[str, SiteTotals]:
    out: dict[str, SiteTotals] = {}

    def key(labels: Labels, side_i: int, site_i: int) -> str | None:
        side = labels[side_i]
        if side == "origin":
            return labels[site_i]
        if side == "destination":
            return FROM_PEERS
        return None

    for counts, is_bytes in ((requests, False), (nbytes, True)):
        for labelnames, rows in counts:
            side_i, site_i = _side_site(labelnames)
            for labels, value in rows:
                k = key(labels, side_i, site_i)
                if k is not None:
                    t = out.get(k, SiteTotals())
                    out[k] = t.plus(0.0, value) if is_bytes else t.plus(value, 0.0)
    return out


Sample = tuple[float, Mapping[str, SiteTotals]]


@dataclass(frozen=True, slots=True)
class RateWindow:
    """Timestamped totals; :meth:`add` returns a new window (see the module docstring)."""

    window_s: float = 30.0
    min_step_s: float = 1.0
    max_samples: int = 64
    samples: tuple[Sample, ...] = field(default=())

    def add(self, now: float, totals: Mapping[str, SiteTotals]) -> RateWindow:
        """The window with ``totals`` counted at ``now`` (dropped when the last sample is
        younger than ``min_step_s``; samples older than the window leave, but one is kept
        before it, so a rate always spans at least the window when there is history)."""
        samples = self.samples
        if samples and now - samples[-1][0] < self.min_step_s:
            return self
        samples = (*samples, (now, dict(totals)))
        cut = 0
        while cut + 1 < len(samples) and now - samples[cut + 1][0] >= self.window_s:
            cut += 1
        samples = samples[max(cut, len(samples) - self.max_samples) :]
        return RateWindow(self.window_s, self.min_step_s, self.max_samples, samples)

    def rates(self, sites: Iterable[str]) -> dict[str, TrafficRate | None]:
        """Per site, the rate between the oldest and the newest sample; None while there is
        only one sample (no interval yet).  A counter that went down (a restart of the
        process is a new window, so only a reset registry could) counts as zero."""
        if len(self.samples) < 2:
            return dict.fromkeys(sites)
        (t0, first), (t1, last) = self.samples[0], self.samples[-1]
        span = t1 - t0
        out: dict[str, TrafficRate | None] = {}
        for site in sites:
            a, b = first.get(site, SiteTotals()), last.get(site, SiteTotals())
            out[site] = TrafficRate(
                max(b.requests - a.requests, 0.0) / span,
                max(b.bytes - a.bytes, 0.0) / span,
                span,
            )
        return out
