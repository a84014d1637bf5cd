"""``[outlier_detection]`` and ``[[service_traffic]]``: decoded, validated, resolved per service."""

from __future__ import annotations

from pathlib import Path

import pytest

from discovery.model import ServiceName
from gateway.cluster.balancer import BalancerChoice, balancer_resolver
from gateway.cluster.health_check import CheckPolicy
from gateway.cluster.outlier import OutlierPolicy
from gateway.cluster.outlier_config import check_resolver, policy_resolver
from gateway.config.errors import ConfigInvalid
from gateway.config.load import load_text
from tests.gateway.config.config_kit import GOOD

SECTIONS = """
[outlier_detection]
consecutive_5xx = 3
base_ejection_time_s = 10.0
max_ejected_percent = 25

[[service_traffic]]
service = "api"
namespace = "payments"
outlier_detection = { consecutive_connect_failures = 1, max_ejection_time_s = 60.0 }

[[service_traffic]]
service = "batch"
outlier_detection = { enabled = false }
"""


def _problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigInvalid) as info:
        load_text(text, base_dir=Path("/etc/isthmus"), filename="gw.toml")
    return {p.path: p.message for p in info.value.problems}


def test_defaults_and_per_service_overrides_resolve() -> None:
    config = load_text(GOOD + SECTIONS, base_dir=Path("/etc/isthmus"))
    policy_for = policy_resolver(config.outlier_detection, config.service_traffic)
    assert policy_for(ServiceName("web", "default")) == OutlierPolicy(
        consecutive_5xx=3,
        consecutive_connect_failures=5,
        base_ejection_time=10.0,
        max_ejection_time=300.0,
        max_ejected_percent=25,
    )
    assert policy_for(ServiceName("api", "payments")) == OutlierPolicy(
        consecutive_5xx=3,  # inherited from the site
        consecutive_connect_failures=1,
        base_ejection_time=10.0,
        max_ejection_time=60.0,
        max_ejected_percent=25,
    )
    assert policy_for(ServiceName("batch", "jobs")) is None  # namespace "*" matches any


def test_lb_per_service() -> None:
    text = GOOD + (
        '\n[[service_traffic]]\nservice = "api"\nlb = "ring_hash"\nhash_header = "X-User"\n'
        '\n[[service_traffic]]\nnamespace = "jobs"\nlb = "least_request"\n'
    )
    config = load_text(text, base_dir=Path("/etc/isthmus"))
    balancer_for = balancer_resolver(config.service_traffic)
    assert balancer_for(ServiceName("api")) == BalancerChoice("ring_hash", hash_header=b"x-user")
    assert balancer_for(ServiceName("w", "jobs")) == BalancerChoice("least_request")
    assert balancer_for(ServiceName("web")) == BalancerChoice()


def test_health_check_per_service() -> None:
    text = GOOD + (
        '\n[[service_traffic]]\nservice = "api"\n'
        '[service_traffic.health_check]\nkind = "http"\npath = "/healthz"\ninterval_s = 5.0\n'
    )
    config = load_text(text, base_dir=Path("/etc/isthmus"))
    check_for = check_resolver(config.service_traffic)
    assert check_for(ServiceName("api")) == CheckPolicy("http", "/healthz", 5.0, 2.0, 2, 3)
    assert check_for(ServiceName("web")) is None


def test_without_sections_detection_is_on_with_the_defaults() -> None:
    config = load_text(GOOD, base_dir=Path("/etc/isthmus"))
    assert policy_resolver(config.outlier_detection)(ServiceName("web")) == OutlierPolicy()


@pytest.mark.parametrize(
    ("section", "path", "fragment"),
    [
        (
            "[outlier_detection]\nmax_ejected_percent = 101",
            "outlier_detection.max_ejected_percent",
            "<= 100",
        ),
        ("[outlier_detection]\nconsecutive_5xx = -1", "outlier_detection.consecutive_5xx", ">= 0"),
        (
            "[outlier_detection]\nbase_ejection_time_s = 60.0\nmax_ejection_time_s = 30.0",
            "outlier_detection.max_ejection_time_s",
            "at least base_ejection_time_s",
        ),
        (
            '[[service_traffic]]\nservice = "api"\n'
            "outlier_detection = { max_ejection_time_s = 1.0 }",
            "service_traffic[0].outlier_detection.max_ejection_time_s",
            "at least base_ejection_time_s",
        ),
        ('[[service_traffic]]\nservice = "API!"', "service_traffic[0].service", "DNS label"),
        ('[[service_traffic]]\nlb = "ring_hash"', "service_traffic[0].lb", "exactly one of"),
        (
            '[[service_traffic]]\nhash_header = "x-user"',
            "service_traffic[0].lb",
            'need lb = "ring_hash"',
        ),
        ('[[service_traffic]]\nlb = "random"', "service_traffic[0].lb", "must be one of"),
        (
            "[[service_traffic]]\nhealth_check = { interval_s = 1.0, timeout_s = 5.0 }",
            "service_traffic[0].health_check.timeout_s",
            "at most interval_s",
        ),
        (
            '[[service_traffic]]\nhealth_check = { kind = "http", path = "healthz" }',
            "service_traffic[0].health_check.path",
            "starting with /",
        ),
        (
            '[[service_traffic]]\nlb = "ring_hash"\nhash_header = "x user"',
            "service_traffic[0].hash_header",
            "HTTP field name",
        ),
        ("[outlier_detection]\nconsecutive_5xxx = 3", "outlier_detection.consecutive_5xxx", ""),
    ],
)
def test_bad_values_name_their_field(section: str, path: str, fragment: str) -> None:
    problems = _problems(GOOD + "\n" + section + "\n")
    assert path in problems, problems
    assert fragment in problems[path]
