"""Passive outlier detection: the pure decision, per endpoint, taking ``now``.

Why passive: the requests the gateway forwards anyway tell whether an endpoint works.  An
endpoint that answers 5xx again and again, or refuses connections, is taken out of rotation
(*ejected*) for a while, even though its source (static config, Consul, mDNS) still calls it
healthy -- otherwise a dead instance keeps its share of the traffic and is exported to peers
as capacity.

Theory of operation
-------------------
Each endpoint that has failed recently has an :class:`EndpointHealth`: two counters of
*consecutive* failures (5xx responses; connects that failed), and its ejection history.  Any
other outcome resets both counters.  When a counter reaches its threshold, the endpoint is
ejected for ``base_ejection_time * n`` seconds (capped at ``max_ejection_time``), where ``n``
counts its ejections; ``n`` falls back to 0 once the endpoint has gone a further
``base_ejection_time * n`` after its last ejection ended without being ejected again, so a
one-off failure does not weigh forever.  When the time is up the endpoint is routable again
(its counters start from 0, so it needs the full threshold again to be ejected).

At most ``max_ejected_percent`` of a service's endpoints are ejected at once (at least one,
so a single-endpoint service can still be ejected and callers fail over to another site): a
failure that would eject more is counted but ejects nothing.  This keeps a service-wide
problem (a bad deploy, a database down) from ejecting everything and turning partial
failure into none at all.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

Outcome = Literal["success", "5xx", "connect_failure"]


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    """When to eject (a threshold of 0 turns that kind of detection off)."""

    consecutive_5xx: int = 5
    consecutive_connect_failures: int = 5
    base_ejection_time: float = 30.0
    max_ejection_time: float = 300.0
    max_ejected_percent: int = 10


@dataclass(frozen=True, slots=True)
class EndpointHealth:
    """What passive detection knows about one endpoint."""

    consecutive_5xx: int = 0
    consecutive_connect_failures: int = 0
    ejections: int = 0
    ejected_until: float | None = None
    reason: str = ""

    def ejected(self, now: float) -> bool:
        return self.ejected_until is not None and now < self.ejected_until

    def forgettable(self, now: float) -> bool:
        """Nothing here that a fresh record would not say (so the adapter may drop it)."""
        return (
            self.consecutive_5xx == 0
            and self.consecutive_connect_failures == 0
            and self.ejections == 0
            and not self.ejected(now)
        )


def may_eject(ejected_now: int, service_size: int, max_percent: int) -> bool:
    """Whether one more ejection keeps the service within ``max_percent`` (at least one)."""
    if max_percent <= 0:
        return False
    allowed = max(1, service_size * max_percent // 100)
    return ejected_now < allowed


def _decayed(health: EndpointHealth, now: float, policy: OutlierPolicy) -> EndpointHealth:
    """Forget the ejection count once the endpoint stayed in long enough after the last one."""
    until = health.ejected_until
    if health.ejections and until is not None and now >= until:
        quiet = policy.base_ejection_time * health.ejections
        if now >= until + quiet:
            return replace(health, ejections=0)
    return health


def observe(
    health: EndpointHealth,
    outcome: Outcome,
    *,
    now: float,
    policy: OutlierPolicy,
    room: bool,
) -> EndpointHealth:
    """Fold one outcome in; ``room`` says whether the service may have one more ejection.

    An outcome seen while the endpoint is ejected (a request that was already under way)
    changes nothing: the ejection stands until its time is up.
    """
    if health.ejected(now):
        return health
    health = _decayed(health, now, policy)
    if outcome == "success":
        if health.consecutive_5xx == 0 and health.consecutive_connect_failures == 0:
            return health
        return replace(health, consecutive_5xx=0, consecutive_connect_failures=0)
    if outcome == "5xx":
        health = replace(health, consecutive_5xx=health.consecutive_5xx + 1)
        count, threshold, what = (
            health.consecutive_5xx,
            policy.consecutive_5xx,
            "consecutive 5xx responses",
        )
    else:
        health = replace(
            health, consecutive_connect_failures=health.consecutive_connect_failures + 1
        )
        count, threshold, what = (
            health.consecutive_connect_failures,
            policy.consecutive_connect_failures,
            "consecutive connect failures",
        )
    if threshold <= 0 or count < threshold or not room:
        return health
    n = health.ejections + 1
    duration = min(policy.base_ejection_time * n, policy.max_ejection_time)
    return EndpointHealth(
        ejections=n,
        ejected_until=now + duration,
        reason=f"outlier: {count} {what}; ejected for {duration:g}s (ejection {n})",
    )
