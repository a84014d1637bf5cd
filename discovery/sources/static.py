"""The ``static`` discovery source: endpoints written in the gateway config.

It says everything it knows once, as one :class:`Resynced` (so a restart of the source, or a
config reload that removed an endpoint, leaves no leftovers), and then has nothing more to say:
it returns, and the catalog keeps its view fresh forever (a static source never goes stale).
"""

from __future__ import annotations

import hashlib

import trio

from discovery.events import Event, Resynced
from discovery.model import Endpoint, ServiceName
from discovery.sources.config import StaticEndpointConfig, StaticSourceConfig


def endpoint_from_config(item: StaticEndpointConfig) -> Endpoint:
    """One ``[[sources.endpoints]]`` table as a catalog endpoint (already validated by config)."""
    return Endpoint(
        service=ServiceName(item.service, item.namespace),
        address=item.address,
        port=item.port,
        protocol=item.protocol,
        healthy=item.healthy,
        weight=item.weight,
        spiffe_id=item.spiffe_id,
        locality=item.locality,
    )


def static_version(config: StaticSourceConfig) -> str:
    """A version that changes when the listed endpoints change (stable across restarts)."""
    digest = hashlib.sha256(repr(config.endpoints).encode()).hexdigest()
    return f"config-{digest[:12]}"


async def serve_static_source(
    config: StaticSourceConfig,
    send: trio.MemorySendChannel[Event],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Emit the configured endpoints as one Resynced, then return."""
    endpoints = tuple(endpoint_from_config(item) for item in config.endpoints)
    await send.send(Resynced(config.name, endpoints, static_version(config), trio.current_time()))
    task_status.started()
