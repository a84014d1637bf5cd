"""The retry budget: retries stay within ratio * requests + min_per_s * ttl over a sliding
window, a retry is refused only at that limit, and an old window is forgotten."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.cluster.retry_budget import SLOTS, RetryBudget
from gateway.config.resilience import RetryBudgetConfig

# One event: (seconds since the previous one, a request began?, retries it tries for).
events = st.lists(
    st.tuples(st.floats(0.0, 3.0), st.booleans(), st.integers(0, 4)), min_size=1, max_size=300
)
configs = st.builds(
    RetryBudgetConfig,
    ratio=st.sampled_from([0.0, 0.1, 0.2, 0.5, 1.0]),
    min_per_s=st.sampled_from([0.0, 0.1, 1.0, 10.0]),
    ttl_s=st.sampled_from([1.0, 5.0, 10.0]),
)


@settings(max_examples=300, deadline=None)
@given(configs, events)
def test_granted_retries_never_exceed_the_share_of_recent_requests(
    config: RetryBudgetConfig, script: list[tuple[float, bool, int]]
) -> None:
    budget = RetryBudget(config)
    now = 0.0
    requests: list[float] = []
    granted: list[float] = []
    slot = config.ttl_s / SLOTS
    reserve = config.min_per_s * config.ttl_s
    for gap, is_request, tries in script:
        now += gap
        if is_request:
            budget.record_request(now)
            requests.append(now)
        for _ in range(tries):
            if budget.try_retry(now):
                granted.append(now)
                # The window holds at least the last ttl - slot seconds of retries and at
                # most the last ttl seconds of requests (whole buckets slide out).
                recent_retries = sum(1 for t in granted if t > now - (config.ttl_s - slot))
                recent_requests = sum(1 for t in requests if t > now - config.ttl_s - 1e-9)
                assert recent_retries <= config.ratio * recent_requests + reserve + 1e-9


@settings(max_examples=200, deadline=None)
@given(configs, events)
def test_a_retry_is_refused_only_at_the_limit(
    config: RetryBudgetConfig, script: list[tuple[float, bool, int]]
) -> None:
    budget = RetryBudget(config)
    now = 0.0
    for gap, is_request, tries in script:
        now += gap
        if is_request:
            budget.record_request(now)
        for _ in range(tries):
            requests, retries = budget.statistics(now)
            allowed = config.ratio * requests + config.min_per_s * config.ttl_s
            assert budget.try_retry(now) == (retries + 1 <= allowed + 1e-9)


def test_a_failing_service_gets_at_most_twenty_percent_more_load() -> None:
    """Every request fails and asks for 3 retries: the load stays <= 1.2x the offered."""
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, min_per_s=0.0, ttl_s=10.0))
    sent = 0
    for n in range(10_000):
        now = n * 0.01  # 100 requests a second for 100 s
        budget.record_request(now)
        sent += 1
        for _ in range(3):
            if not budget.try_retry(now):
                break
            sent += 1
    assert sent <= 1.2 * 10_000
    assert sent >= 1.19 * 10_000  # and the budget is used, not starved


def test_the_minimum_rate_lets_a_quiet_service_retry() -> None:
    budget = RetryBudget(RetryBudgetConfig(ratio=0.2, min_per_s=1.0, ttl_s=10.0))
    budget.record_request(0.0)  # one request: 20 % of it is no whole retry
    assert [budget.try_retry(0.0) for _ in range(12)].count(True) == 10


def test_an_old_window_is_forgotten() -> None:
    budget = RetryBudget(RetryBudgetConfig(ratio=1.0, min_per_s=0.0, ttl_s=10.0))
    for _ in range(5):
        budget.record_request(0.0)
    assert all(budget.try_retry(0.0) for _ in range(5))
    assert not budget.try_retry(0.0)
    assert budget.statistics(100.0) == (0, 0)
    assert not budget.try_retry(100.0)  # no requests, no reserve: nothing to spend
    budget.record_request(100.0)
    assert budget.try_retry(100.0)
