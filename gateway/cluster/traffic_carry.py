"""What per-endpoint state survives a reload of ``[[service_traffic]]``: the pure decisions.

Why keep state at all: a reload is routine (a retry count, a new rule for one service), and
forgetting what the gateway learned would put every ejected or failing endpoint back into
rotation at once -- traffic to instances known to be broken, and an export count that jumps
up and down for peers.  So state is kept for every service whose settings did not change,
and carried over consistently for those whose settings did:

* **Outlier detection** (:func:`carry_ejection`): a service whose detection is now off loses
  its records and ejections (the operator said not to judge it).  Otherwise the record stays:
  an ejection in force stays in force, but never longer than the new settings would eject it
  for if it happened now (so a shorter ``max_ejection_time`` takes effect at once), and a
  failure counter whose kind of detection is now off (threshold 0) starts from 0.  Counters
  are compared with the new thresholds at the next failure; nothing is ejected by the reload
  itself.  An ejection carried over is the same ejection: it is not counted again.
* **Active health checks** (:func:`carry_checks`): a service no longer checked loses its
  states (its marks clear); a service whose check changed keeps whether each endpoint is
  healthy (a failing one stays out until the new check passes ``healthy_threshold`` times)
  but its streaks start afresh and it is probed at once; an unchanged check keeps its state
  and its schedule.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from discovery.model import EndpointKey, ServiceName
from gateway.cluster.health_check import CheckPolicy, CheckState
from gateway.cluster.outlier import EndpointHealth, OutlierPolicy

CheckFor = Callable[[ServiceName], CheckPolicy | None]


def carry_ejection(
    health: EndpointHealth, policy: OutlierPolicy | None, now: float
) -> EndpointHealth | None:
    """``health`` under the new ``policy`` at ``now``; None: forget it (detection off, or
    nothing left worth remembering)."""
    if policy is None:
        return None
    until = health.ejected_until
    if health.ejected(now) and until is not None:
        longest = now + min(policy.base_ejection_time * health.ejections, policy.max_ejection_time)
        if longest < until:
            health = replace(health, ejected_until=longest)
    if policy.consecutive_5xx <= 0 and health.consecutive_5xx:
        health = replace(health, consecutive_5xx=0)
    if policy.consecutive_connect_failures <= 0 and health.consecutive_connect_failures:
        health = replace(health, consecutive_connect_failures=0)
    return None if health.forgettable(now) else health


def carry_checks(
    states: Mapping[EndpointKey, CheckState],
    due: Mapping[EndpointKey, float],
    old_for: CheckFor,
    new_for: CheckFor,
) -> tuple[dict[EndpointKey, CheckState], dict[EndpointKey, float]]:
    """The checker's states and next-probe times to start the new checker with."""
    kept_states: dict[EndpointKey, CheckState] = {}
    kept_due: dict[EndpointKey, float] = {}
    for key in states.keys() | due.keys():
        new = new_for(key.service)
        if new is None:
            continue
        same = new == old_for(key.service)
        state = states.get(key)
        if state is not None:
            kept_states[key] = state if same else CheckState(state.healthy, 0, 0, state.reason)
        if same and key in due:
            kept_due[key] = due[key]
    return kept_states, kept_due
