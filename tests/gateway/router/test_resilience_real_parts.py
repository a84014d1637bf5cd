"""Breakers and retries with the router's real clusters: the max_connections breaker counts
L4 flows while open (over the ceiling: refused at once, 503 naming it; a closed one frees
room), and a peer's 5xx is held back and retried over a real HTTP/2 link."""

from __future__ import annotations

import pytest

from gateway.cluster.breaker import BreakerOpen
from gateway.config.model import ServiceTrafficConfig
from gateway.config.resilience import BreakerConfig, RetryConfig
from gateway.http.exchange import EmptyBody
from gateway.router.retry import Resilience, resilience_resolver
from overlay.h2.stream import H2Stream
from tests.gateway.router.router_kit import (
    API,
    DB,
    Collect,
    StandInCluster,
    ctx,
    get,
    make_router,
    peer,
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


async def test_a_peers_5xx_is_held_back_and_retried_over_a_real_link() -> None:
    """The held head comes through a real HTTP/2 tunnel (PeerCluster): the stream of the
    failed attempt is given up, the retry opens a new one, the caller sees one response."""
    answers = [503, 200]
    calls: list[int] = []

    async def flaky(stream: H2Stream) -> None:
        status = answers[min(len(calls), len(answers) - 1)]
        calls.append(status)
        body = b"%d" % status
        await stream.send_headers(
            [(b":status", b"%d" % status), (b"content-length", b"%d" % len(body))]
        )
        await stream.send_all(body)
        await stream.send_eof()

    rule = ServiceTrafficConfig(retries=RetryConfig(on=("5xx",)))
    async with peer(flaky) as link:
        router = make_router({API: ("b",)}, links={"b": link})
        router.resilience = Resilience(resilience_resolver([rule]))
        out = Collect()
        await router.forward(get(b"api.default.isthmus"), EmptyBody(), out, ctx())
    assert out.response is not None and out.response.status == 200
    assert bytes(out.body) == b"200" and calls == [503, 200]
