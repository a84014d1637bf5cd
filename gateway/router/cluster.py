"""What the router asks of a site's cluster, in one place.

Why a module of its own: the router (:mod:`gateway.router.route`) and the breaker wrapper that
sits between it and a cluster (:mod:`gateway.router.flow_breaker`) both speak to clusters
through this protocol, and the wrapper cannot import the router (the router imports it).
"""

from __future__ import annotations

from typing import Protocol

import trio

from discovery.model import ServiceName
from gateway.http.exchange import Body, CallContext, Request, ResponseWriter, UpgradeResult


class Cluster(Protocol):
    """What the router needs of a site's cluster: the local one
    (``gateway.cluster.local.LocalCluster``) or a peer's (``gateway.cluster.peer.PeerCluster``).
    """

    async def forward(
        self,
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        *,
        service: ServiceName,
    ) -> None: ...

    async def open_l4(
        self, ctx: CallContext, *, service: ServiceName
    ) -> trio.abc.HalfCloseableStream: ...

    async def open_websocket(
        self, request: Request, ctx: CallContext, *, service: ServiceName
    ) -> UpgradeResult: ...
