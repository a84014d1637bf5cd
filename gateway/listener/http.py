"""The downstream HTTP listener: HTTP/1.1, h2c (prior knowledge), TLS with ALPN, proxy mode.

Theory of operation
-------------------
One accept loop (:func:`gateway.listener.tcp.serve_tcp`, capped at ``max_connections``).  Per
connection:

1. ``tls = true``: a TLS handshake (bounded by ``tls_handshake_timeout_s``) with this gateway's
   SVID, ALPN ``h2``/``http/1.1``, client certificate *optional*
   (:mod:`gateway.listener.tls`: a caller that presents one must pass the SPIFFE
   per-trust-domain check and becomes ``ctx.caller_id``).
2. The wire is chosen (:mod:`gateway.listener.detect`): ALPN ``h2``, or the HTTP/2 client
   preface as the first bytes (prior knowledge h2c), runs an HTTP/2 server connection
   (:mod:`gateway.listener.h2`); anything else is HTTP/1.1 (:mod:`gateway.listener.h1`, with
   ``CONNECT`` and the WebSocket upgrade).  The peeked bytes are handed back through
   :class:`PrefixedStream`.
3. A ``CallContext`` carries the local site, the caller ID, the deadline to the response head
   ``now + route_timeout`` and the stream limits that apply after it
   (``stream_idle_timeout_s``, ``max_stream_duration_s``).
4. Errors become responses in one place (:mod:`gateway.http.rescue`); after a response head
   went out an error can only close the connection (HTTP/1.1) or reset the stream (HTTP/2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from foundation.spiffe_id import SpiffeId
from gateway.config.model import LimitsConfig, ListenerConfig
from gateway.listener.caller_stream import CallerStream
from gateway.listener.detect import peek_preface, speaks_h2
from gateway.listener.h1 import serve_h1_connection
from gateway.listener.h2 import serve_h2_connection
from gateway.listener.tcp import serve_tcp
from gateway.listener.tls import DownstreamTls, accept_tls
from gateway.observe.observer import LISTENER
from gateway.prefixed import PrefixedStream
from gateway.router.route import Router
from overlay.identity.rotation import Identity

if TYPE_CHECKING:
    from gateway.listener.drain import Drain

log = logging.getLogger("isthmus.listener.http")


async def serve_http_connection(
    tcp: CallerStream,
    router: Router,
    *,
    tls: DownstreamTls | None,
    limits: LimitsConfig,
    local_site: str,
    drain: Drain | None = None,
) -> None:
    """Serve one accepted connection: TLS (optional), then HTTP/2 or HTTP/1.1."""
    try:
        await _serve_http_connection(
            tcp, router, tls=tls, limits=limits, local_site=local_site, drain=drain
        )
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        log.debug("caller connection broke: %r", exc)  # a reset caller is not an error of ours


async def _serve_http_connection(
    tcp: CallerStream,
    router: Router,
    *,
    tls: DownstreamTls | None,
    limits: LimitsConfig,
    local_site: str,
    drain: Drain | None,
) -> None:
    stream: trio.abc.Stream = tcp
    caller_id: SpiffeId | None = None
    alpn: str | None = None
    if tls is not None:
        accepted = await accept_tls(tcp, tls, timeout_s=limits.tls_handshake_timeout_s)
        if accepted is None:
            return
        stream, caller_id, alpn = accepted
    scheme = b"https" if tls is not None else b"http"
    if alpn == "h2":
        await serve_h2_connection(
            stream, router, limits=limits, local_site=local_site, caller_id=caller_id, drain=drain
        )
        return
    if drain is None:
        first = await peek_preface(stream, limits.header_timeout_s)
    else:  # a connection that has sent nothing yet closes when the drain begins
        with drain.waiting() as idle, idle:
            first = await peek_preface(stream, limits.header_timeout_s)
        if idle.cancelled_caught:
            return
    if not first:
        return
    wrapped = PrefixedStream(stream, first)
    if speaks_h2(first, alpn):
        await serve_h2_connection(
            wrapped, router, limits=limits, local_site=local_site, caller_id=caller_id, drain=drain
        )
    else:
        await serve_h1_connection(
            wrapped,
            router,
            limits=limits,
            local_site=local_site,
            caller_id=caller_id,
            scheme=scheme,
            drain=drain,
        )


async def serve_http_listener(
    config: ListenerConfig,
    router: Router,
    *,
    identity: Identity | None,
    limits: LimitsConfig,
    local_site: str,
    live_limits: Callable[[], LimitsConfig] | None = None,
    drain: Drain | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run an ``http`` listener until cancelled; ``started`` gets the bound port.

    ``live_limits``: read once per new connection (a config reload changes the limits of
    connections accepted after it); ``limits`` otherwise, and always for the listener's own
    ``max_connections`` and ``send_timeout_s``.  ``drain``: docs/workers.md."""
    tls: DownstreamTls | None = None
    if config.tls:
        if identity is None:
            raise ValueError(f"listener {config.name}: tls = true needs the gateway identity")
        tls = DownstreamTls(identity)
        tls.context()  # fail at start-up, not on the first caller

    async def on_connection(tcp: CallerStream) -> None:
        LISTENER.set(config.name)  # labels this connection's requests (metrics, access log)
        lim = limits if live_limits is None else live_limits()
        await serve_http_connection(
            tcp, router, tls=tls, limits=lim, local_site=local_site, drain=drain
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
