"""This gateway in Consul: registered as ``isthmus-gateway`` with a TTL check it passes every
``ttl_s / 3``, deregistered on shutdown.

Why a TTL check (not an HTTP check run by the agent): the gateway's heartbeat proves the
process and its event loop are alive, and it needs no port the agent must reach.  When the
gateway dies without deregistering, the check turns critical after ``ttl_s`` and peers'
``?passing`` watch drops the replica; ``deregister_critical_after_s`` lets Consul remove the
leftover registration.  A heartbeat answered 404 (the agent restarted and forgot us) is
answered with a new registration.  Failures are logged once per new reason and retried on a
backoff; they never stop the gateway.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import Any

import trio

from discovery.backoff import Backoff
from discovery.sources.consul_parse import ConsulError, ConsulHttpError
from gateway.consul_gateways.agent import GatewayAgent
from gateway.consul_gateways.meta import check_id

log = logging.getLogger("isthmus.consul_gateways")

_DEREGISTER_TIMEOUT_S = 5.0


async def keep_registered(
    agent: GatewayAgent,
    body: dict[str, Any],
    *,
    ttl_s: float,
    backoff: Backoff,
    rng: Callable[[], float] = random.random,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Register ``body`` and keep its TTL check passing; deregister when cancelled."""
    sid = str(body["ID"])
    check = check_id(sid)
    registered = False
    attempt = 0
    last_reason = ""
    task_status.started()  # the registration goes on in the background, never blocking start
    try:
        while True:
            try:
                if not registered:
                    await agent.register(body)
                    registered = True
                    log.info("registered in Consul as %s (%s)", sid, body["Meta"])
                else:
                    await agent.pass_check(check)
            except ConsulHttpError as exc:
                if registered and str(exc).startswith("HTTP 404 "):
                    registered = False  # the agent forgot us: register again at once
                    log.warning("Consul lost registration %s: registering again", sid)
                    continue
                last_reason, attempt = await _failed(exc, last_reason, attempt, backoff, rng)
                continue
            except ConsulError as exc:
                last_reason, attempt = await _failed(exc, last_reason, attempt, backoff, rng)
                continue
            if last_reason:
                log.info("Consul heartbeat of %s works again", sid)
            attempt, last_reason = 0, ""
            await trio.sleep(ttl_s / 3)
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(_DEREGISTER_TIMEOUT_S):
            try:
                await agent.deregister(sid)
                log.info("deregistered %s from Consul", sid)
            except ConsulError as exc:
                log.warning("cannot deregister %s from Consul: %s", sid, exc)


async def _failed(
    exc: ConsulError, last: str, attempt: int, backoff: Backoff, rng: Callable[[], float]
) -> tuple[str, int]:
    reason = f"{type(exc).__name__}: {exc}"
    if reason != last:
        log.warning("Consul registration or heartbeat failed: %s", reason)
    await trio.sleep(backoff.delay(attempt, rng()))
    return reason, attempt + 1
