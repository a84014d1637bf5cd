"""The ``max_connections`` breaker: L4 tunnels and WebSocket flows open to a service in a site.

Why a cluster wrapper: a flow holds its connection (a TCP connection to an endpoint, or a
tunnel on a link) for as long as its owner keeps the stream, long after the router's walk
returned.  So the count is taken when the flow is opened and given back when its stream is
closed (its owner always closes it); over the ceiling the flow is refused at once with
:class:`~gateway.cluster.breaker.BreakerOpen` (503 naming ``max_connections``), without
dialling anything.  HTTP requests are counted by :mod:`gateway.router.retry` instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import trio

from discovery.model import ServiceName
from gateway.cluster.breaker import Breakers
from gateway.cluster.held_stream import HeldStream
from gateway.config.resilience import BreakerConfig
from gateway.http.exchange import Body, CallContext, Request, ResponseWriter, UpgradeResult
from gateway.router.cluster import Cluster


class BreakerCluster:
    """``inner`` (one site's cluster) with its flows counted against ``max_connections``."""

    __slots__ = ("breakers", "config_for", "inner", "site")

    def __init__(
        self,
        inner: Cluster,
        site: str,
        breakers: Breakers,
        config_for: Callable[[ServiceName], BreakerConfig],
    ) -> None:
        self.inner = inner
        self.site = site
        self.breakers = breakers
        self.config_for = config_for

    def _admit(self, service: ServiceName) -> Callable[[], None]:
        self.breakers.admit(self.config_for(service), service, self.site, "connections")
        return lambda: self.breakers.release(service, self.site, "connections")

    async def forward(
        self,
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        *,
        service: ServiceName,
    ) -> None:
        await self.inner.forward(request, body, writer, ctx, service=service)

    async def open_l4(
        self, ctx: CallContext, *, service: ServiceName
    ) -> trio.abc.HalfCloseableStream:
        release = self._admit(service)
        try:
            stream = await self.inner.open_l4(ctx, service=service)
        except BaseException:
            release()
            raise
        return HeldStream(stream, release)

    async def open_websocket(
        self, request: Request, ctx: CallContext, *, service: ServiceName
    ) -> UpgradeResult:
        release = self._admit(service)
        try:
            result = await self.inner.open_websocket(request, ctx, service=service)
        except BaseException:
            release()
            raise
        return replace(result, stream=HeldStream(result.stream, release))
