"""Active health checks: the pure part (thresholds), per endpoint.

Why thresholds: one lost probe must not take an endpoint out, and one lucky probe must not
bring a broken one back.  An endpoint turns unhealthy after ``unhealthy_threshold`` failed
probes in a row and healthy again after ``healthy_threshold`` good ones in a row.  It starts
healthy: its source says so, and passive outlier detection covers it meanwhile.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class CheckPolicy:
    kind: Literal["http", "tcp"] = "tcp"
    path: str = "/"
    interval: float = 10.0
    timeout: float = 2.0
    healthy_threshold: int = 2
    unhealthy_threshold: int = 3


@dataclass(frozen=True, slots=True)
class CheckState:
    healthy: bool = True
    successes: int = 0
    failures: int = 0
    reason: str = ""


def after_probe(state: CheckState, error: str | None, policy: CheckPolicy) -> CheckState:
    """Fold one probe in: ``error`` is None for a good probe, else what went wrong."""
    if error is None:
        successes = state.successes + 1
        if not state.healthy and successes >= policy.healthy_threshold:
            return CheckState()
        return CheckState(state.healthy, successes, 0, state.reason)
    failures = state.failures + 1
    if state.healthy and failures < policy.unhealthy_threshold:
        return CheckState(True, 0, failures, "")
    return CheckState(
        False, 0, failures, f"health check: {failures} failed probes in a row, last: {error}"
    )
