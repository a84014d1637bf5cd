"""Locality preference: the pure rule, and LocalCluster against real endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
from hypothesis import given
from hypothesis import strategies as st

from discovery.model import Endpoint
from gateway.cluster.local import LocalCluster
from gateway.cluster.locality import prefer_locality
from gateway.demo.services import serve_http_echo
from gateway.http.exchange import CallContext, EmptyBody, Request
from gateway.upstream.pool import UpstreamPool
from tests.gateway.upstream.upstream_kit import SVC, RecordingWriter, endpoint, watch_of


def ep(port: int, zone: str) -> Endpoint:
    return Endpoint(SVC, "127.0.0.1", port, locality=zone)


@given(
    zones=st.lists(st.sampled_from(["a", "b", ""]), min_size=1, max_size=12),
    down_in_a=st.integers(min_value=0, max_value=12),
    percent=st.integers(min_value=0, max_value=100),
)
def test_prefers_the_locality_exactly_while_enough_of_it_is_routable(
    zones: list[str], down_in_a: int, percent: int
) -> None:
    candidates = tuple(ep(1000 + i, z) for i, z in enumerate(zones))
    routable_a = sum(1 for z in zones if z == "a")
    listed_a = routable_a + down_in_a
    preferred, others = prefer_locality(candidates, "a", listed_a, percent)
    assert sorted(preferred + others, key=lambda e: e.port) == list(candidates)
    enough = routable_a > 0 and routable_a * 100 >= listed_a * percent
    if enough:
        assert all(e.locality == "a" for e in preferred) and len(preferred) == routable_a
    else:
        assert preferred == candidates and others == ()
    assert prefer_locality(candidates, "", listed_a, percent) == (candidates, ())


@asynccontextmanager
async def cluster_of(*endpoints: Endpoint) -> AsyncIterator[LocalCluster]:
    async with trio.open_nursery() as nursery:
        pool = UpstreamPool()
        await nursery.start(pool.serve)
        yield LocalCluster(
            local_site="here",
            catalog=watch_of(*endpoints),
            pool=pool,
            locality="zone-a",
            locality_min_healthy_percent=70,
        )
        nursery.cancel_scope.cancel()


async def sites(cluster: LocalCluster, n: int) -> list[str]:
    out = []
    for _ in range(n):
        writer = RecordingWriter()
        req = Request(b"GET", b"http", b"api.default.isthmus", b"/", ())
        ctx = CallContext("here", None, trio.current_time() + 10)
        await cluster.forward(req, EmptyBody(), writer, ctx, service=SVC)
        out.append(writer.json()["site"])
    return out


async def test_same_zone_endpoints_take_the_traffic_until_too_few_are_healthy() -> None:
    async with trio.open_nursery() as servers:
        a1, a2, b1 = [
            await servers.start(serve_http_echo, "127.0.0.1", 0, name)
            for name in ("a1", "a2", "b1")
        ]
        zone_a = (endpoint(a1, locality="zone-a"), endpoint(a2, locality="zone-a"))
        async with cluster_of(*zone_a, endpoint(b1, locality="zone-b")) as cluster:
            assert set(await sites(cluster, 8)) == {"a1", "a2"}
        # Half of zone-a is down (50 % < 70 %): every routable endpoint shares the load.
        down = endpoint(a2, locality="zone-a", healthy=False)
        async with cluster_of(zone_a[0], down, endpoint(b1, locality="zone-b")) as cluster:
            assert set(await sites(cluster, 8)) == {"a1", "b1"}
        servers.cancel_scope.cancel()
