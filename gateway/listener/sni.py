"""The SNI listener: route TLS by the name in its ClientHello, never terminating it.

Theory of operation
-------------------
Per connection: read the ClientHello (bounded in bytes and by ``tls_handshake_timeout_s``),
take its SNI, which must be an L7 address of this mesh, open an L4 tunnel to it
(``router.open_l4("<sni>:443")``), send the bytes already read, then splice both ways.  The
TLS session stays end to end between caller and workload: this gateway sees ciphertext only,
so workloads keep their own mTLS.  Anything unusable -- not TLS, no SNI, a name outside the
mesh, an unknown or unreachable service -- closes the connection: there is no TLS session of
ours in which an error page could be sent.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from foundation.errors import IsthmusError
from gateway.config.model import LimitsConfig, ListenerConfig
from gateway.listener.caller_stream import CallerStream
from gateway.listener.sni_peek import read_client_hello
from gateway.listener.tcp import call_context, serve_tcp
from gateway.observe.observer import LISTENER
from gateway.relay import relay_l4
from gateway.router.route import Router

if TYPE_CHECKING:
    from gateway.listener.drain import Drain

log = logging.getLogger("isthmus.listener.sni")

SNI_PORT = 443


async def serve_sni_connection(
    tcp: CallerStream, router: Router, *, limits: LimitsConfig, local_site: str
) -> None:
    """Route one TLS connection by its SNI and relay it untouched."""
    try:
        sni, hello = await read_client_hello(tcp, timeout_s=limits.tls_handshake_timeout_s)
        ctx = call_context(limits, local_site)
        upstream = await router.open_l4(b"%s:%d" % (sni.encode("ascii"), SNI_PORT), ctx)
    except IsthmusError as exc:
        log.debug("SNI connection refused: %r", exc)
        return
    await relay_l4(tcp, upstream, limits, what="SNI", first=hello)


async def serve_sni_listener(
    config: ListenerConfig,
    router: Router,
    *,
    limits: LimitsConfig,
    local_site: str,
    live_limits: Callable[[], LimitsConfig] | None = None,  # per new connection (reload)
    drain: Drain | None = None,  # docs/workers.md
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run an ``sni`` listener until cancelled; ``started`` gets the bound port."""

    async def on_connection(tcp: CallerStream) -> None:
        LISTENER.set(config.name)  # labels this connection's tunnel (metrics, access log)
        lim = limits if live_limits is None else live_limits()
        await serve_sni_connection(tcp, router, limits=lim, local_site=local_site)

    await serve_tcp(
        on_connection,
        host=str(config.address),
        port=config.port,
        max_connections=limits.max_connections,
        send_timeout=limits.send_timeout_s,
        drain=drain,
        task_status=task_status,
    )
