"""The max_connections breaker: L4 flows to a service in a site are counted while open; over
the ceiling a flow is refused at once (503 naming the breaker), and a closed one frees room."""

from __future__ import annotations

import pytest

from gateway.cluster.breaker import BreakerOpen
from gateway.config.model import ServiceTrafficConfig
from gateway.config.resilience import BreakerConfig
from gateway.router.retry import Resilience, resilience_resolver
from tests.gateway.router.router_kit import (
    DB,
    StandInCluster,
    ctx,
    make_router,
    serving,
    tcp_echo_backend,
)


async def test_a_flow_over_max_connections_is_refused_until_one_closes() -> None:
    rule = ServiceTrafficConfig(service="db", breakers=BreakerConfig(max_connections=1))
    async with serving(tcp_echo_backend) as port:
        router = make_router({DB: ("a",)}, cluster=StandInCluster(tcp={DB: port}))
        router.resilience = Resilience(resilience_resolver([rule]))
        first = await router.open_l4(b"db.default.isthmus", ctx())
        await first.send_all(b"ping")
        assert await first.receive_some(4) == b"ping"
        with pytest.raises(BreakerOpen, match=r"max_connections of db\.default in site a") as info:
            await router.open_l4(b"db.default.isthmus", ctx())
        assert info.value.http_status == 503
        await first.aclose()
        await first.aclose()  # a second close gives nothing back twice
        assert router.resilience.breakers.in_flight(DB, "a").connections == 0
        again = await router.open_l4(b"db.default.isthmus", ctx())
        assert router.resilience.breakers.in_flight(DB, "a").connections == 1
        await again.aclose()
