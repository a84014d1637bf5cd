"""What a reload changes in ``[[service_traffic]]`` (and ``[outlier_detection]``), without I/O.

Why by part and not by rule: the rules are first-match with wildcards, so which services a
rule decides depends on the rules before it and on the catalog (only known at run time).
What the plan can say exactly is which *resolver* changes: each part of the gateway reads
one projection of the rules (the local cluster the balancers, the outlier detector the
outlier settings plus the site's ``[outlier_detection]``, the health checker the checks, the
router the retries and breakers), and a part whose projection is the same keeps running
untouched.  The adapter (:mod:`gateway.reload.traffic`) swaps the parts that changed and
decides per service at run time what state to keep.

A change to a field of :class:`~gateway.config.model.ServiceTrafficConfig` this module does
not know (one added later) needs a restart: unknown means "not live".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from gateway.config.errors import Problem
from gateway.config.model import GatewayConfig, ServiceTrafficConfig

#: The fields each part reads (besides ``service`` and ``namespace``, which every part reads).
BALANCER_FIELDS = ("lb", "hash_header", "hash_cookie")
OUTLIER_FIELDS = ("outlier_detection",)
CHECK_FIELDS = ("health_check",)
RESILIENCE_FIELDS = ("retries", "breakers")
_MATCH = ("service", "namespace")
KNOWN_FIELDS = frozenset(
    _MATCH + BALANCER_FIELDS + OUTLIER_FIELDS + CHECK_FIELDS + RESILIENCE_FIELDS
)

Rules = Sequence[ServiceTrafficConfig]


@dataclass(frozen=True, slots=True)
class TrafficPlan:
    """Which parts of the per-service traffic settings a reload swaps."""

    resilience: bool = False  # the router's retries and breakers per service
    balancers: bool = False  # the local cluster's balancer per service
    outlier: bool = False  # the outlier detector's policy per service
    health_checks: bool = False  # the active health checker (restarted with the new checks)
    added: tuple[str, ...] = ()  # ``service.namespace`` of rules the new config adds
    removed: tuple[str, ...] = ()  # ... and of rules it no longer has
    rules: bool = False  # ``[[service_traffic]]`` itself changed
    site_outlier: bool = False  # ``[outlier_detection]`` changed

    @property
    def any(self) -> bool:
        return self.resilience or self.balancers or self.outlier or self.health_checks

    @property
    def parts(self) -> tuple[str, ...]:
        """What is applied, for the reload's log line (e.g. ``lb``, ``rule added: api.*``)."""
        out = [f"rule added: {r}" for r in self.added]
        out += [f"rule removed: {r}" for r in self.removed]
        for flag, name in (
            (self.balancers, "lb"),
            (self.outlier, "outlier_detection"),
            (self.health_checks, "health_check"),
            (self.resilience, "retries/breakers"),
        ):
            if flag:
                out.append(name)
        return tuple(out)


NO_CHANGE = TrafficPlan()


def _project(rules: Rules, names: tuple[str, ...]) -> tuple[tuple[object, ...], ...]:
    return tuple(tuple(getattr(r, n) for n in _MATCH + names) for r in rules)


def _checks(a: Rules, b: Rules) -> bool:
    return any(r.health_check is not None for r in (*a, *b))


def _label(rule: ServiceTrafficConfig) -> str:
    return f"{rule.service}.{rule.namespace}"


def plan_traffic(old: GatewayConfig, new: GatewayConfig) -> tuple[TrafficPlan, tuple[Problem, ...]]:
    """The parts to swap to go from ``old``'s rules to ``new``'s, and why it cannot be done
    live (a problem naming ``service_traffic``) if a field unknown here changed."""
    a, b = old.service_traffic, new.service_traffic
    if a == b and old.outlier_detection == new.outlier_detection:
        return NO_CHANGE, ()
    unknown = tuple(f.name for f in fields(ServiceTrafficConfig) if f.name not in KNOWN_FIELDS)
    if unknown and _project(a, unknown) != _project(b, unknown):
        problem = Problem(
            "service_traffic",
            f"changing [[service_traffic]] {', '.join(unknown)} needs a restart "
            "(not applied live yet)",
        )
        return NO_CHANGE, (problem,)
    old_labels, new_labels = [_label(r) for r in a], [_label(r) for r in b]
    return (
        TrafficPlan(
            resilience=_project(a, RESILIENCE_FIELDS) != _project(b, RESILIENCE_FIELDS),
            balancers=_project(a, BALANCER_FIELDS) != _project(b, BALANCER_FIELDS),
            outlier=(
                _project(a, OUTLIER_FIELDS) != _project(b, OUTLIER_FIELDS)
                or old.outlier_detection != new.outlier_detection
            ),
            # No rule checks before or after: there is no checker to restart.
            health_checks=_checks(a, b) and _project(a, CHECK_FIELDS) != _project(b, CHECK_FIELDS),
            added=tuple(x for x in new_labels if x not in old_labels),
            rules=a != b,
            site_outlier=old.outlier_detection != new.outlier_detection,
            removed=tuple(x for x in old_labels if x not in new_labels),
        ),
        (),
    )
