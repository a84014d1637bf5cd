"""LocalCluster with passive outlier detection, against real endpoints on loopback.

The detector's clock is a hand-moved one, so ejection times pass without waiting; the
requests and endpoints are real sockets.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from discovery.model import Endpoint
from gateway.cluster.local import LocalCluster, NoHealthyEndpoint
from gateway.cluster.outlier import OutlierPolicy
from gateway.cluster.outlier_detector import OutlierDetector
from gateway.demo.services import serve_http_echo
from gateway.http.exchange import CallContext, EmptyBody, Request
from gateway.upstream.pool import UpstreamPool
from tests.gateway.cluster.status_server import serve_status
from tests.gateway.upstream.upstream_kit import (
    SVC,
    RecordingWriter,
    endpoint,
    refused_port,
    watch_of,
)

POLICY = OutlierPolicy(
    consecutive_5xx=3,
    consecutive_connect_failures=2,
    base_ejection_time=30.0,
    max_ejection_time=300.0,
    max_ejected_percent=50,
)


class HandClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@asynccontextmanager
async def cluster_of(
    *endpoints: Endpoint, policy: OutlierPolicy = POLICY
) -> AsyncIterator[tuple[LocalCluster, HandClock]]:
    clock = HandClock()
    detector = OutlierDetector(lambda _svc: policy, clock=clock)
    async with trio.open_nursery() as nursery:
        pool = UpstreamPool()
        await nursery.start(pool.serve)
        yield (
            LocalCluster(
                local_site="here", catalog=watch_of(*endpoints), pool=pool, outlier=detector
            ),
            clock,
        )
        nursery.cancel_scope.cancel()


async def get(cluster: LocalCluster) -> RecordingWriter:
    writer = RecordingWriter()
    req = Request(b"GET", b"http", b"api.default.isthmus", b"/", ())
    ctx = CallContext("here", None, trio.current_time() + 10)
    await cluster.forward(req, EmptyBody(), writer, ctx, service=SVC)
    return writer


async def test_an_endpoint_answering_5xx_is_ejected_then_returns() -> None:
    seen: list[int] = []
    async with trio.open_nursery() as servers:
        good = await servers.start(serve_http_echo, "127.0.0.1", 0, "good")
        bad = await servers.start(serve_status, "127.0.0.1", 503, seen)
        async with cluster_of(endpoint(good), endpoint(bad)) as (cluster, clock):
            statuses = [(await get(cluster)).status for _ in range(6)]
            assert statuses.count(503) == 3 and len(seen) == 3  # round robin until ejected
            health = cluster.outlier.health(endpoint(bad).key)
            assert health is not None and health.ejected(clock.now)
            assert "3 consecutive 5xx" in health.reason
            assert [(await get(cluster)).status for _ in range(10)] == [200] * 10
            assert len(seen) == 3 and len(cluster.endpoints(SVC)) == 1
            ejected = cluster.outlier.ejections.latest
            assert list(ejected.keys()) == [endpoint(bad).key]

            clock.now = 30.0  # base_ejection_time x 1 has passed: back in rotation
            statuses = [(await get(cluster)).status for _ in range(4)]
            assert statuses.count(503) == 2 and len(cluster.outlier.ejections.latest) == 0
        servers.cancel_scope.cancel()


async def test_connect_failures_eject_and_requests_still_succeed_meanwhile() -> None:
    async with trio.open_nursery() as servers:
        good = await servers.start(serve_http_echo, "127.0.0.1", 0, "good")
        dead = endpoint(await refused_port())
        async with cluster_of(endpoint(good), dead) as (cluster, clock):
            for _ in range(6):  # the dead one's turn falls back to the good one
                assert (await get(cluster)).status == 200
            health = cluster.outlier.health(dead.key)
            assert health is not None and health.ejected(clock.now)
            assert "2 consecutive connect failures" in health.reason
            assert cluster.endpoints(SVC) == (endpoint(good),)
        servers.cancel_scope.cancel()


async def test_max_ejected_percent_keeps_half_of_a_failing_service() -> None:
    seen: list[int] = []
    async with trio.open_nursery() as servers:
        a = await servers.start(serve_status, "127.0.0.1", 500, seen)
        b = await servers.start(serve_status, "127.0.0.1", 502, seen)
        async with cluster_of(endpoint(a), endpoint(b)) as (cluster, _clock):
            for _ in range(12):
                assert (await get(cluster)).status in (500, 502)
            assert len(cluster.outlier.ejections.latest) == 1  # 50 % of 2: one ejected
            assert len(cluster.endpoints(SVC)) == 1
        servers.cancel_scope.cancel()


async def test_a_lone_failing_endpoint_is_ejected_and_the_service_has_none() -> None:
    seen: list[int] = []
    async with trio.open_nursery() as servers:
        bad = await servers.start(serve_status, "127.0.0.1", 503, seen)
        async with cluster_of(endpoint(bad)) as (cluster, _clock):
            for _ in range(3):
                assert (await get(cluster)).status == 503
            with pytest.raises(NoHealthyEndpoint):  # 503 here, and the router may fail over
                await get(cluster)
            assert not cluster.has_endpoints(SVC)
        servers.cancel_scope.cancel()


async def test_detection_off_keeps_a_failing_endpoint() -> None:
    seen: list[int] = []
    async with trio.open_nursery() as servers:
        bad = await servers.start(serve_status, "127.0.0.1", 503, seen)
        async with trio.open_nursery() as nursery:
            pool = UpstreamPool()
            await nursery.start(pool.serve)
            cluster = LocalCluster(
                local_site="here",
                catalog=watch_of(endpoint(bad)),
                pool=pool,
                outlier=OutlierDetector(lambda _svc: None),
            )
            for _ in range(10):
                assert (await get(cluster)).status == 503
            nursery.cancel_scope.cancel()
        servers.cancel_scope.cancel()
