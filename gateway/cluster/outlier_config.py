"""From ``[outlier_detection]`` and ``[[service_traffic]]`` to each service's policy.

Why a resolver: the detector asks "which policy for this service?" only when an endpoint
failed or has a record, so the answer is computed then (and remembered per service, a
bounded cache: the catalog bounds the number of services anyway).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

from discovery.model import ServiceName
from gateway.cluster.health_check import CheckPolicy
from gateway.cluster.outlier import OutlierPolicy
from gateway.cluster.outlier_detector import PolicyFor
from gateway.config.model import OutlierDetectionConfig, ServiceTrafficConfig

WILDCARD = "*"


def _pick(override: float | None, site: float) -> float:
    return site if override is None else override


def policy_resolver(
    site: OutlierDetectionConfig, rules: Sequence[ServiceTrafficConfig] = ()
) -> PolicyFor:
    """A function giving each service its policy (None: detection off for it)."""
    rules = tuple(rules)

    @functools.lru_cache(maxsize=4096)
    def policy_for(service: ServiceName) -> OutlierPolicy | None:
        rule = next(
            (
                r
                for r in rules
                if r.service in (WILDCARD, service.name)
                and r.namespace in (WILDCARD, service.namespace)
            ),
            None,
        )
        o = rule.outlier_detection if rule is not None else None
        enabled = site.enabled if o is None or o.enabled is None else o.enabled
        if not enabled:
            return None
        if o is None:
            return OutlierPolicy(
                consecutive_5xx=site.consecutive_5xx,
                consecutive_connect_failures=site.consecutive_connect_failures,
                base_ejection_time=site.base_ejection_time_s,
                max_ejection_time=site.max_ejection_time_s,
                max_ejected_percent=site.max_ejected_percent,
            )
        return OutlierPolicy(
            consecutive_5xx=int(_pick(o.consecutive_5xx, site.consecutive_5xx)),
            consecutive_connect_failures=int(
                _pick(o.consecutive_connect_failures, site.consecutive_connect_failures)
            ),
            base_ejection_time=_pick(o.base_ejection_time_s, site.base_ejection_time_s),
            max_ejection_time=_pick(o.max_ejection_time_s, site.max_ejection_time_s),
            max_ejected_percent=int(_pick(o.max_ejected_percent, site.max_ejected_percent)),
        )

    return policy_for


def check_resolver(
    rules: Sequence[ServiceTrafficConfig],
) -> Callable[[ServiceName], CheckPolicy | None]:
    """Each service's active health check: the first matching rule's ``health_check``."""
    rules = tuple(rules)

    @functools.lru_cache(maxsize=4096)
    def check_for(service: ServiceName) -> CheckPolicy | None:
        for r in rules:
            if r.service in (WILDCARD, service.name) and r.namespace in (
                WILDCARD,
                service.namespace,
            ):
                c = r.health_check
                if c is None:
                    return None
                return CheckPolicy(
                    c.kind,
                    c.path,
                    c.interval_s,
                    c.timeout_s,
                    c.healthy_threshold,
                    c.unhealthy_threshold,
                )
        return None

    return check_for
