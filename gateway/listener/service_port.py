"""Service ports: a local port bound to one (possibly remote) service, for legacy clients.

A client that only knows ``host:port`` connects here and reaches ``target`` wherever it
runs.  ``protocol = "tcp"``: every connection is an L4 tunnel to the target (raw bytes,
half-close carried through).  ``protocol = "http"``: HTTP/1.1 requests are parsed and each is
routed to the target whatever its ``Host`` says (the authority is replaced), so failover,
deadlines and caller identity work as for any routed request.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from foundation.errors import IsthmusError
from gateway.config.model import LimitsConfig, ServicePortConfig
from gateway.listener.caller_stream import CallerStream
from gateway.listener.h1 import serve_h1_connection
from gateway.listener.tcp import call_context, serve_tcp
from gateway.observe.observer import LISTENER
from gateway.relay import relay_l4
from gateway.router.route import Router

if TYPE_CHECKING:
    from gateway.listener.drain import Drain

log = logging.getLogger("isthmus.listener.service_port")


async def serve_tcp_service_connection(
    tcp: CallerStream, router: Router, target: bytes, *, limits: LimitsConfig, local_site: str
) -> None:
    """Relay one connection to ``target`` over an L4 tunnel (closed if it cannot be set up)."""
    ctx = call_context(limits, local_site)
    try:
        upstream = await router.open_l4(target, ctx)
    except IsthmusError as exc:
        log.info("service port to %s: %s", target.decode(), exc)
        return
    await relay_l4(tcp, upstream, limits, what="service port")


async def serve_service_port(
    config: ServicePortConfig,
    router: Router,
    *,
    limits: LimitsConfig,
    local_site: str,
    live_limits: Callable[[], LimitsConfig] | None = None,  # per new connection (reload)
    drain: Drain | None = None,  # docs/workers.md
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run one service port until cancelled; ``started`` gets the bound port."""
    target = config.target.encode("ascii")

    async def on_connection(tcp: CallerStream) -> None:
        LISTENER.set(config.name)  # labels this connection's requests (metrics, access log)
        lim = limits if live_limits is None else live_limits()
        if config.protocol == "tcp":
            await serve_tcp_service_connection(
                tcp, router, target, limits=lim, local_site=local_site
            )
        else:
            await serve_h1_connection(
                tcp, router, limits=lim, local_site=local_site, target=target, drain=drain
            )

    await serve_tcp(
        on_connection,
        host=str(config.address),
        port=config.port,
        max_connections=limits.max_connections,
        send_timeout=limits.send_timeout_s,
        drain=drain,
        task_status=task_status,
    )
