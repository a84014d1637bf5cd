"""``[service_traffic.retries]`` and ``[service_traffic.breakers]``: decoded with their
defaults, every bad value reported with its exact path."""

from __future__ import annotations

from pathlib import Path

import pytest

from discovery.model import ServiceName
from gateway.config.errors import ConfigInvalid
from gateway.config.load import load_text
from gateway.config.resilience import BreakerConfig, RetryConfig
from gateway.router.retry import resilience_resolver
from tests.gateway.config.config_kit import GOOD


def _problems(text: str) -> dict[str, str]:
    with pytest.raises(ConfigInvalid) as info:
        load_text(text, base_dir=Path("/etc/isthmus"), filename="gw.toml")
    return {p.path: p.message for p in info.value.problems}


def test_retries_and_breakers_decode_and_resolve_per_service() -> None:
    text = GOOD + (
        '\n[[service_traffic]]\nservice = "api"\n'
        '[service_traffic.retries]\non = ["5xx", "retriable-status-codes"]\n'
        "retriable_status_codes = [429]\nmax_retries = 3\nper_try_timeout_s = 1.5\n"
        "[service_traffic.retries.budget]\nratio = 0.1\nmin_per_s = 0.0\n"
        "[service_traffic.breakers]\nmax_requests = 7\n"
    )
    config = load_text(text, base_dir=Path("/etc/isthmus"))
    rule = config.service_traffic[0]
    assert rule.retries.on == ("5xx", "retriable-status-codes")
    assert rule.retries.budget.ratio == 0.1 and rule.retries.budget.ttl_s == 10.0
    assert rule.breakers == BreakerConfig(max_requests=7)
    resolve = resilience_resolver(config.service_traffic)
    api = resolve(ServiceName("api"))
    assert api.rules.statuses == frozenset({429}) and api.rules.per_try_timeout == 1.5
    other = resolve(ServiceName("web"))
    assert other.retry == RetryConfig() and other.rules.on == {"connect-failure", "refused-stream"}


def test_bad_values_name_their_path() -> None:
    text = GOOD + (
        '\n[[service_traffic]]\nservice = "api"\n'
        '[service_traffic.retries]\non = ["5xx", "sometimes"]\nmax_retries = 11\n'
        "retriable_status_codes = [700]\nbackoff_base_s = 1.0\nbackoff_max_s = 0.5\n"
        "[service_traffic.retries.budget]\nratio = 1.5\nttl_s = 0.5\n"
        "[service_traffic.breakers]\nmax_requests = 0\nmax_queue = 3\n"
    )
    problems = _problems(text)
    r = "service_traffic[0].retries"
    assert f"{r}.on[1]" in problems
    assert f"{r}.max_retries" in problems
    assert f"{r}.retriable_status_codes" in problems
    assert f"{r}.budget.ratio" in problems and f"{r}.budget.ttl_s" in problems
    assert "service_traffic[0].breakers.max_requests" in problems
    assert "service_traffic[0].breakers.max_queue" in problems  # unknown key


def test_cross_field_rules() -> None:
    text = GOOD + (
        '\n[[service_traffic]]\nservice = "api"\n'
        '[service_traffic.retries]\non = ["retriable-status-codes"]\n'
        "backoff_base_s = 1.0\nbackoff_max_s = 0.5\n"
    )
    problems = _problems(text)
    assert set(problems) == {
        "service_traffic[0].retries.backoff_max_s",
        "service_traffic[0].retries.retriable_status_codes",
    }
