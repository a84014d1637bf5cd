"""A routed request is observed with its route: the access line's ``route``, the metrics'
``route`` label, and the counts of the route's rate limit and fault injection.  Real local
endpoints (an HTTP/1.1 echo on a socket), the real router and observer."""

from __future__ import annotations

import json

import pytest

from gateway.http.errors import RateLimited
from gateway.observe.access_log import AccessLog
from gateway.observe.observer import Observer
from gateway.router.route import Router
from tests.gateway.router.router_kit import (
    API,
    BytesBody,
    Collect,
    StandInCluster,
    ctx,
    get,
    http_echo_backend,
    make_router,
    serving,
)
from tests.gateway.routes.routes_kit import draws, rules

CANARY = """
[[routes]]
name = "canary"
address = "api.default"
match = { path = { prefix = "/v1/" } }
backends = [{ service = "api.default", site = "a" }]
"""


def observed(router: Router) -> tuple[Observer, AccessLog]:
    log = AccessLog("-", 1.0)
    obs = Observer(local_site="a", mesh_domain="isthmus", sites=["b"], known=lambda s: s == API)
    obs.access_log = log
    router.observer = obs
    return obs, log


async def test_a_routed_request_carries_its_route_in_the_line_and_the_labels() -> None:
    async with serving(http_echo_backend) as port:
        router = make_router({API: ("a",)}, cluster=StandInCluster(http={API: port}))
        router.rules = rules(CANARY, draw=draws([]))
        obs, log = observed(router)
        for path in (b"/v1/x", b"/other"):  # routed, then no route matches
            out = Collect()
            await router.forward(get(b"api.default.isthmus", path), BytesBody(), out, ctx())
            assert out.response is not None and out.response.status == 200
    routed, unrouted = (json.loads(x) for x in log.drain())
    assert routed["route"] == "canary" and unrouted["route"] is None
    assert obs.requests.get(("origin", "other", "api.default", "a", "canary")) == 1
    assert obs.requests.get(("origin", "other", "api.default", "a", "none")) == 1
    assert obs.responses.get(("origin", "other", "api.default", "a", "canary", "2xx")) == 1
    assert obs.total_seconds.count(("origin", "other", "api.default", "a", "canary")) == 1
    assert 'route="canary"' in obs.registry.render()


async def test_rate_limited_requests_are_counted_by_route() -> None:
    router = make_router({API: ("a",)}, cluster=StandInCluster())
    router.rules = rules(
        '[[routes]]\nname = "limited"\naddress = "api.default"\n'
        "rate_limit = { requests_per_s = 0.001, burst = 1 }\n"
        'direct_response = { status = 200, body = "ok" }\n',
        clock=lambda: 0.0,
    )
    obs, log = observed(router)
    await router.forward(get(b"api.default.isthmus"), BytesBody(), Collect(), ctx())
    for _ in range(2):
        with pytest.raises(RateLimited):
            await router.forward(get(b"api.default.isthmus"), BytesBody(), Collect(), ctx())
    assert obs.rate_limited.get(("limited",)) == 2
    assert obs.responses.get(("origin", "other", "api.default", "none", "limited", "4xx")) == 2
    assert [json.loads(x)["status"] for x in log.drain()] == [200, 429, 429]


async def test_injected_faults_are_counted_by_route_and_kind() -> None:
    router = make_router({API: ("a",)}, cluster=StandInCluster())
    router.rules = rules(
        '[[routes]]\nname = "chaos"\naddress = "api.default"\n'
        "fault = { percent = 50, abort_status = 503 }\n"
        'direct_response = { status = 200, body = "ok" }\n',
        draw=draws([0.1, 0.9]),  # the first request is faulted, the second is not
    )
    obs, _ = observed(router)
    statuses = []
    for _ in range(2):
        out = Collect()
        await router.forward(get(b"api.default.isthmus"), BytesBody(), out, ctx())
        assert out.response is not None
        statuses.append(out.response.status)
    assert statuses == [503, 200]
    assert obs.faults.values == {("chaos", "abort"): 1.0}
    assert obs.rate_limited.values == {}
