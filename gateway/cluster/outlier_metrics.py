"""The outlier detector's counts as metrics, read at scrape time.

Why at scrape time: an ejection is rare and the detector already counts it
(:attr:`~gateway.cluster.outlier_detector.OutlierDetector.ejected_total`); reading the count
when Prometheus asks costs the data path nothing.  The ``service`` label is bounded by the
detector (local services only, capped, then ``other``).
"""

from __future__ import annotations

from collections.abc import Iterator

from gateway.cluster.outlier_detector import OutlierDetector
from gateway.observe.metrics import GaugeFamily

__all__ = ["outlier_gauges"]


def outlier_gauges(detector: OutlierDetector) -> Iterator[GaugeFamily]:
    """``isthmus_outlier_ejections_total{service}``: endpoints ejected since start."""
    counts = detector.ejected_total
    yield GaugeFamily(
        "isthmus_outlier_ejections_total",
        "Endpoints that passive outlier detection ejected (taken out of rotation), by "
        "service; an endpoint ejected again counts again.",
        ("service",),
        tuple(((name,), float(counts[name])) for name in sorted(counts)),
        kind="counter",
    )
