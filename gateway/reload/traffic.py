"""Apply a reload's ``[[service_traffic]]`` / ``[outlier_detection]`` changes (the adapter of
:mod:`gateway.reload.traffic_plan`).

Why swaps of resolvers: every part reads its per-service settings through one function
(balancer, outlier policy, health check, retries/breakers) when a request starts or an
outcome is recorded, so swapping that function changes the behaviour for new requests while
requests under way finish with what they were given -- no connection, tunnel or link is
touched.  What state each part keeps is decided by the pure functions of
:mod:`gateway.cluster.traffic_carry`; the active health checker is the one part that is a
task: it is stopped and started again (under the gateway's nursery, in its own cancel scope)
with the states carried over.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import trio

from discovery.snapshot import Catalog
from discovery.watch import Watch
from gateway.cluster.balancer import balancer_resolver
from gateway.cluster.health_checker import (
    CheckMemory,
    Failing,
    failing_of,
    serve_health_checks,
)
from gateway.cluster.outlier_config import check_resolver, policy_resolver
from gateway.cluster.traffic_carry import carry_checks
from gateway.config.model import GatewayConfig, ServiceTrafficConfig
from gateway.reload.scoped import ScopedTasks
from gateway.reload.traffic_plan import TrafficPlan
from gateway.router.retry import resilience_resolver

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("isthmus.reload")

#: The health checker's key in the gateway's scoped tasks.
HEALTH_CHECKS_KEY = "health checks"


def swap_traffic(gw: Gateway, plan: TrafficPlan, config: GatewayConfig) -> None:
    """The swaps that need no await (one atomic step with the reload's other swaps)."""
    rules = config.service_traffic
    if plan.resilience and gw.router.resilience is not None:
        gw.router.resilience.policy_for = resilience_resolver(rules)
    if plan.balancers:
        gw.cluster.set_balancers(balancer_resolver(rules))
    if plan.outlier:
        lifted = gw.outlier.set_policy(policy_resolver(config.outlier_detection, rules))
        if lifted:
            log.info("outlier detection turned off: %d ejection(s) lifted", lifted)


@dataclass(frozen=True, slots=True)
class HealthChecks:
    """The parts the active health checker runs with (the gateway's own)."""

    scoped: ScopedTasks
    catalog: Watch[Catalog]
    failing: Watch[Failing]
    memory: CheckMemory

    async def start(self, nursery: trio.Nursery, rules: Sequence[ServiceTrafficConfig]) -> None:
        """Start the checker for ``rules`` (if any asks for checks) from the states in
        ``memory``, in its own cancel scope under ``nursery``."""
        if not any(rule.health_check is not None for rule in rules):
            return
        serve = functools.partial(
            serve_health_checks,
            self.catalog,
            check_resolver(rules),
            self.failing,
            memory=self.memory,
        )
        await self.scoped.start(nursery, HEALTH_CHECKS_KEY, serve)

    async def restart(
        self,
        nursery: trio.Nursery,
        old: Sequence[ServiceTrafficConfig],
        new: Sequence[ServiceTrafficConfig],
    ) -> None:
        """Stop the checker for ``old``'s checks, carry its states over to ``new``'s, publish
        the marks that remain (a removed check's clear at once) and start it again."""
        await self.scoped.stop(HEALTH_CHECKS_KEY)
        memory = self.memory
        memory.states, memory.due = carry_checks(
            memory.states, memory.due, check_resolver(old), check_resolver(new)
        )
        failing = failing_of(memory.states)
        if failing != self.failing.latest:
            self.failing.publish(failing)
        await self.start(nursery, new)


def health_checks_of(gw: Gateway) -> HealthChecks:
    return HealthChecks(gw.scoped, gw.catalog, gw.failing, gw.checks)
