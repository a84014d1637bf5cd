"""The [[service_traffic]] part of the reload plan: which parts swap (pure, no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.load import load_text
from gateway.config.model import GatewayConfig
from gateway.reload import traffic_plan
from gateway.reload.plan import plan_reload
from gateway.reload.traffic_plan import NO_CHANGE, TrafficPlan, plan_traffic
from tests.gateway.config.config_kit import GOOD

API = '\n[[service_traffic]]\nservice = "api"\n'
DB = '\n[[service_traffic]]\nservice = "db"\n'
CHECK = "[service_traffic.health_check]\ninterval_s = 5.0\n"


def _config(text: str) -> GatewayConfig:
    return load_text(text, base_dir=Path("/etc/isthmus"))


def _plan(old: str, new: str) -> TrafficPlan:
    plan, problems = plan_traffic(_config(GOOD + old), _config(GOOD + new))
    assert problems == ()
    return plan


def test_the_same_rules_change_nothing() -> None:
    assert _plan(API + CHECK, API + CHECK) == NO_CHANGE
    assert not NO_CHANGE.any and NO_CHANGE.parts == ()


@pytest.mark.parametrize(
    ("new", "part"),
    [
        (API + 'lb = "ring_hash"\nhash_header = "x-user"\n', "balancers"),
        (API + 'lb = "least_request"\n', "balancers"),
        (API + "outlier_detection = { consecutive_5xx = 2 }\n", "outlier"),
        (API + "[service_traffic.health_check]\ninterval_s = 5.0\n", "health_checks"),
        (API + "[service_traffic.retries]\nmax_retries = 4\n", "resilience"),
        (API + "[service_traffic.breakers]\nmax_requests = 5\n", "resilience"),
    ],
)
def test_one_changed_setting_swaps_only_its_part(new: str, part: str) -> None:
    plan = _plan(API, new)
    flags = {p: getattr(plan, p) for p in ("balancers", "outlier", "health_checks", "resilience")}
    assert flags == {p: p == part for p in flags}
    assert plan.rules and not plan.site_outlier
    assert plan.added == plan.removed == ()


def test_an_added_or_removed_rule_swaps_every_part_that_reads_the_rules() -> None:
    plan = _plan(API, API + DB)
    assert plan.added == ("db.*",) and plan.removed == ()
    assert plan.balancers and plan.outlier and plan.resilience
    assert not plan.health_checks  # no rule checks, before or after: nothing to restart
    assert plan.parts == ("rule added: db.*", "lb", "outlier_detection", "retries/breakers")
    plan = _plan(API + DB + CHECK, API)
    assert plan.removed == ("db.*",) and plan.health_checks
    assert "rule removed: db.*" in plan.parts and "health_check" in plan.parts


def test_the_rules_order_matters() -> None:
    """First match: the same two rules in another order decide differently."""
    plan = _plan(API + DB, DB + API)
    assert plan.balancers and plan.added == plan.removed == ()


def test_site_outlier_detection_swaps_the_outlier_part_only() -> None:
    plan = _plan(API, API + "\n[outlier_detection]\nmax_ejected_percent = 50\n")
    assert plan.outlier and plan.site_outlier and not plan.rules
    assert not (plan.balancers or plan.health_checks or plan.resilience)


def test_a_field_the_plan_does_not_know_needs_a_restart(monkeypatch: pytest.MonkeyPatch) -> None:
    """A field added to the rules later is not silently ignored by a reload."""
    monkeypatch.setattr(traffic_plan, "KNOWN_FIELDS", traffic_plan.KNOWN_FIELDS - {"lb"})
    old, new = _config(GOOD + API), _config(GOOD + API + 'lb = "least_request"\n')
    plan = plan_reload(old, new)
    assert [p.path for p in plan.problems] == ["service_traffic"]
    assert "lb needs a restart" in plan.problems[0].message
    # The same rules, that field unchanged: still live.
    retries = _config(GOOD + API + "[service_traffic.retries]\nmax_retries = 4\n")
    assert plan_reload(old, retries).problems == ()
