"""Ejections are counted per service and exported as ``isthmus_outlier_ejections_total``."""

from __future__ import annotations

import pytest
import trio

from discovery.model import Endpoint, ServiceName
from gateway.cluster import outlier_detector
from gateway.cluster.outlier import OutlierPolicy
from gateway.cluster.outlier_detector import OutlierDetector
from gateway.cluster.outlier_metrics import outlier_gauges
from gateway.observe.metrics import Registry
from tests.gateway.upstream.upstream_kit import SVC

POLICY = OutlierPolicy(consecutive_5xx=3, base_ejection_time=30.0, max_ejected_percent=100)
A = Endpoint(SVC, "127.0.0.1", 8001)
B = Endpoint(SVC, "127.0.0.1", 8002)


async def test_each_ejection_counts_once_and_shows_in_the_exposition(
    autojump_clock: trio.abc.Clock,
) -> None:
    detector = OutlierDetector(lambda _svc: POLICY)
    registry = Registry()
    registry.collector(lambda: outlier_gauges(detector))
    name = f"{SVC.name}.{SVC.namespace}"
    for _ in range(5):  # ejected at the third; failures while ejected eject nothing more
        detector.record(A, "5xx", service_size=2)
    detector.record(B, "5xx", service_size=2)  # below the threshold
    assert detector.ejected_total == {name: 1}
    await trio.sleep(31)  # released; ejected again after three more
    for _ in range(3):
        detector.record(A, "5xx", service_size=2)
    assert detector.ejected_total == {name: 2}
    text = registry.render()
    assert "# TYPE isthmus_outlier_ejections_total counter" in text
    assert f'isthmus_outlier_ejections_total{{service="{name}"}} 2' in text


def test_the_service_label_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(outlier_detector, "MAX_COUNTED_SERVICES", 2)
    detector = OutlierDetector(lambda _svc: POLICY, clock=lambda: 1.0)
    for i in range(4):
        ep = Endpoint(ServiceName(f"s{i}", "default"), "127.0.0.1", 9000 + i)
        for _ in range(3):
            detector.record(ep, "5xx", service_size=1)
    assert detector.ejected_total == {"s0.default": 1, "s1.default": 1, "other": 2}
