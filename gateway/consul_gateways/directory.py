"""Which replicas each peer site has: the static ``[[peers]]`` addresses plus, for a peer with
``discover = "consul"``, the passing ``isthmus-gateway`` instances of that site in Consul.

:class:`PeerDirectory` is the one place peering's peer set is changed (a config reload and
the Consul watch both go through :meth:`PeerDirectory.apply`, under one lock, so they never
interleave).  :func:`watch_gateways` runs a blocking query on
``/v1/health/service/isthmus-gateway?passing`` (``index`` = the last ``X-Consul-Index``), so
a replica that registers, deregisters or stops heartbeating is linked or unlinked within one
round trip; the site's other replicas keep their links (peering diffs by replica).  While
Consul cannot be reached, the last answer stays: the links' own PING deadlines say whether a
replica is alive, and a Consul outage must not take a whole site down.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from discovery.backoff import Backoff
from discovery.sources.consul_parse import ConsulError, next_index
from gateway.config.model import GatewayConfig
from gateway.consul_gateways.agent import GatewayAgent
from gateway.consul_gateways.meta import GatewayInstance, parse_instances, replica_diff
from gateway.reload.apply import peer_specs

if TYPE_CHECKING:
    from overlay.peering.peers import Peering

log = logging.getLogger("isthmus.consul_gateways")

_MIN_ROUND_S = 0.1  # HashiCorp asks blocking-query clients not to spin on fast answers
_MAX_SKIP_LINES = 10  # warnings per answer about skipped instances (then a count)


class PeerDirectory:
    """The discovered gateways, and the lock every change of peering's peer set takes."""

    def __init__(self) -> None:
        self.instances: tuple[GatewayInstance, ...] = ()
        self.lock = trio.Lock()
        #: Set (and replaced) each time ``instances`` changes: a supervisor passes the new
        #: set on to its workers, whose links follow the same replicas.
        self.changed = trio.Event()

    def set_instances(self, instances: tuple[GatewayInstance, ...]) -> None:
        self.instances = instances
        self.changed.set()
        self.changed = trio.Event()

    async def apply(self, peering: Peering, config: GatewayConfig) -> tuple[str, ...]:
        """Make peering's peers those of ``config`` plus the discovered replicas; the sites
        whose links closed (see :meth:`Peering.set_peers`)."""
        async with self.lock:
            return await peering.set_peers(peer_specs(config, self.instances))


def _replicas(
    config: GatewayConfig, instances: tuple[GatewayInstance, ...]
) -> dict[str, set[tuple[str, int]]]:
    out: dict[str, set[tuple[str, int]]] = {}
    for spec in peer_specs(config, instances):
        out.setdefault(spec.name, set()).add((spec.host, spec.port))
    return out


async def watch_gateways(
    agent: GatewayAgent,
    directory: PeerDirectory,
    peering: Peering,
    config: Callable[[], GatewayConfig],
    *,
    wait_s: float,
    backoff: Backoff,
    rng: Callable[[], float] = random.random,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep ``directory`` (and peering) up to date with Consul; until cancelled.
    ``config()`` is the running config (a reload may change which peers discover)."""
    index = 0
    attempt = 0
    last_reason = ""
    started = False
    while True:
        round_started = trio.current_time()
        try:
            received, data = await agent.gateways(index=index, wait_s=wait_s)
            instances, skipped = parse_instances(data)
        except ConsulError as exc:
            reason = f"{type(exc).__name__}: {exc}"
            if reason != last_reason:
                log.warning("cannot read the gateways registered in Consul: %s", reason)
                last_reason = reason
            if not started:
                started = True
                task_status.started()
            await trio.sleep(backoff.delay(attempt, rng()))
            attempt += 1
            index = 0
            continue
        if last_reason:
            log.info("reading the gateways registered in Consul again")
        attempt, last_reason = 0, ""
        index = next_index(index, received)
        if instances != directory.instances:
            for reason in skipped[:_MAX_SKIP_LINES]:
                log.warning("isthmus-gateway instance skipped: %s", reason)
            if len(skipped) > _MAX_SKIP_LINES:
                log.warning(
                    "%d more isthmus-gateway instances skipped", len(skipped) - _MAX_SKIP_LINES
                )
            cfg = config()
            before = _replicas(cfg, directory.instances)
            directory.set_instances(instances)
            after = _replicas(cfg, instances)
            for site in sorted(set(before) | set(after)):
                added, removed = replica_diff(before.get(site, ()), after.get(site, ()))
                if added or removed:
                    log.info(
                        "site %s replicas from Consul: added %s, removed %s",
                        site,
                        list(added),
                        list(removed),
                    )
            await directory.apply(peering, cfg)
        if not started:
            started = True
            task_status.started()
        if trio.current_time() - round_started < _MIN_ROUND_S:
            await trio.sleep(_MIN_ROUND_S)
