"""Passive outlier detection as a pure function of outcomes and ``now``."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.cluster.outlier import EndpointHealth, Outcome, OutlierPolicy, may_eject, observe

POLICY = OutlierPolicy(
    consecutive_5xx=3,
    consecutive_connect_failures=2,
    base_ejection_time=10.0,
    max_ejection_time=25.0,
    max_ejected_percent=50,
)


def feed(
    outcomes: list[Outcome], *, now: float = 0.0, health: EndpointHealth | None = None
) -> EndpointHealth:
    h = health or EndpointHealth()
    for o in outcomes:
        h = observe(h, o, now=now, policy=POLICY, room=True)
    return h


def test_consecutive_5xx_eject_with_the_reason() -> None:
    assert not feed(["5xx", "5xx"]).ejected(0.0)
    h = feed(["5xx", "5xx", "5xx"])
    assert h.ejected(0.0) and h.ejected(9.9) and not h.ejected(10.0)
    assert h.reason == "outlier: 3 consecutive 5xx responses; ejected for 10s (ejection 1)"


def test_a_success_in_between_resets_the_count() -> None:
    assert not feed(["5xx", "5xx", "success", "5xx", "5xx"]).ejected(0.0)
    assert not feed(["connect_failure", "success", "connect_failure"]).ejected(0.0)


def test_connect_failures_have_their_own_threshold() -> None:
    h = feed(["connect_failure", "connect_failure"])
    assert h.ejected(0.0) and "2 consecutive connect failures" in h.reason


def test_ejection_time_grows_with_n_and_is_capped() -> None:
    h = feed(["5xx"] * 3, now=0.0)
    assert h.ejected_until == 10.0
    h = feed(["5xx"] * 3, now=10.0, health=h)  # failing again right after release
    assert h.ejected_until == 30.0 and h.ejections == 2
    h = feed(["5xx"] * 3, now=30.0, health=h)
    assert h.ejected_until == 55.0 and h.ejections == 3  # 30 capped at 25


def test_the_count_decays_after_a_quiet_period() -> None:
    h = feed(["5xx"] * 3, now=0.0)  # ejected until 10, quiet needed: 10 more
    h = feed(["5xx"] * 3, now=20.0, health=h)
    assert h.ejections == 1 and h.ejected_until == 30.0


def test_outcomes_while_ejected_change_nothing() -> None:
    h = feed(["5xx"] * 3)
    assert feed(["success", "5xx", "connect_failure"], now=5.0, health=h) is h


def test_no_room_counts_but_does_not_eject() -> None:
    h = EndpointHealth()
    for _ in range(5):
        h = observe(h, "5xx", now=0.0, policy=POLICY, room=False)
    assert not h.ejected(0.0) and h.consecutive_5xx == 5
    h = observe(h, "5xx", now=0.0, policy=POLICY, room=True)  # room again: ejected at once
    assert h.ejected(0.0)


def test_zero_threshold_turns_a_kind_off() -> None:
    off = OutlierPolicy(consecutive_5xx=0)
    h = EndpointHealth()
    for _ in range(50):
        h = observe(h, "5xx", now=0.0, policy=off, room=True)
    assert not h.ejected(0.0)


@given(
    outcomes=st.lists(st.sampled_from(["success", "5xx", "connect_failure"]), max_size=60),
    step=st.floats(min_value=0.0, max_value=20.0),
)
def test_ejected_iff_a_threshold_run_ended_in_the_last_ejection_time(
    outcomes: list[Outcome], step: float
) -> None:
    """Model check: the endpoint is ejected exactly when a run of failures reached a
    threshold while it was not ejected, for at most max_ejection_time."""
    h = EndpointHealth()
    now = 0.0
    for o in outcomes:
        before = h
        h = observe(h, o, now=now, policy=POLICY, room=True)
        if before.ejected(now):
            assert h is before
        elif o == "5xx":
            assert h.ejected(now) == (before.consecutive_5xx + 1 >= 3)
        elif o == "connect_failure":
            assert h.ejected(now) == (before.consecutive_connect_failures + 1 >= 2)
        else:
            assert not h.ejected(now) and h.consecutive_5xx == 0
        if h.ejected_until is not None:
            assert h.ejected_until - now <= POLICY.max_ejection_time
        now += step


@given(
    size=st.integers(min_value=1, max_value=200),
    percent=st.integers(min_value=1, max_value=100),
)
def test_max_ejected_percent_allows_at_least_one(size: int, percent: int) -> None:
    allowed = sum(1 for n in range(size + 1) if may_eject(n, size, percent))
    assert allowed == max(1, size * percent // 100)
    assert allowed <= max(1, size * percent / 100)
    assert not may_eject(0, size, 0)
