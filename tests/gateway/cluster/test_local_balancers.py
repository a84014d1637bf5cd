"""LocalCluster's per-service balancers against real endpoints: least request, ring hash."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from discovery.model import Endpoint, ServiceName
from gateway.cluster.balancer import BalancerChoice
from gateway.cluster.local import LocalCluster
from gateway.demo.services import serve_http_echo
from gateway.http.exchange import CallContext, EmptyBody, Request
from gateway.upstream.pool import UpstreamPool
from tests.gateway.cluster.status_server import serve_held
from tests.gateway.upstream.upstream_kit import SVC, RecordingWriter, endpoint, watch_of


@asynccontextmanager
async def cluster_of(choice: BalancerChoice, *endpoints: Endpoint) -> AsyncIterator[LocalCluster]:
    def balancer_for(service: ServiceName) -> BalancerChoice:
        return choice

    async with trio.open_nursery() as nursery:
        pool = UpstreamPool()
        await nursery.start(pool.serve)
        yield LocalCluster(
            local_site="here", catalog=watch_of(*endpoints), pool=pool, balancer_for=balancer_for
        )
        nursery.cancel_scope.cancel()


async def get(cluster: LocalCluster, *headers: tuple[bytes, bytes]) -> RecordingWriter:
    writer = RecordingWriter()
    req = Request(b"GET", b"http", b"api.default.isthmus", b"/", tuple(headers))
    ctx = CallContext("here", None, trio.current_time() + 10)
    await cluster.forward(req, EmptyBody(), writer, ctx, service=SVC)
    return writer


async def test_least_request_avoids_the_endpoint_that_is_busy() -> None:
    held: list[int] = []
    release = trio.Event()
    async with trio.open_nursery() as servers:
        busy = await servers.start(serve_held, "127.0.0.1", release, held)
        free = await servers.start(serve_http_echo, "127.0.0.1", 0, "free")
        choice = BalancerChoice("least_request")
        async with cluster_of(choice, endpoint(busy), endpoint(free)) as cluster:
            answers: list[int] = []

            async def slow_call() -> None:
                answers.append((await get(cluster)).status)

            async with trio.open_nursery() as calls:
                # Requests until one is held at the busy endpoint (two choices of two: the
                # less loaded always wins, so at most the first few reach it).
                with trio.fail_after(10):
                    while not held:
                        calls.start_soon(slow_call)
                        await trio.sleep(0.05)
                before = len(held)
                for _ in range(10):  # busy has a request in flight: everything goes to free
                    assert (await get(cluster)).json()["site"] == "free"
                assert len(held) == before
                release.set()
            assert answers and all(s == 200 for s in answers)
        servers.cancel_scope.cancel()


async def test_ring_hash_by_header_sticks_and_spreads() -> None:
    async with trio.open_nursery() as servers:
        ports = [await servers.start(serve_http_echo, "127.0.0.1", 0, f"e{i}") for i in range(3)]
        choice = BalancerChoice("ring_hash", hash_header=b"x-user")
        async with cluster_of(choice, *(endpoint(p) for p in ports)) as cluster:
            where = {}
            for user in range(12):
                key = (b"x-user", b"user-%d" % user)
                sites = {(await get(cluster, key)).json()["site"] for _ in range(4)}
                assert len(sites) == 1  # the same user always lands on the same endpoint
                where[user] = sites.pop()
            assert len(set(where.values())) >= 2  # different users spread
            # Without the header the service is balanced by weight (round robin here).
            assert {(await get(cluster)).json()["site"] for _ in range(3)} == {"e0", "e1", "e2"}
        servers.cancel_scope.cancel()


async def test_ring_hash_by_cookie() -> None:
    async with trio.open_nursery() as servers:
        ports = [await servers.start(serve_http_echo, "127.0.0.1", 0, f"e{i}") for i in range(3)]
        choice = BalancerChoice("ring_hash", hash_cookie=b"session")
        async with cluster_of(choice, *(endpoint(p) for p in ports)) as cluster:
            for user in range(6):
                cookie = (b"cookie", b"theme=dark; session=s%d; x=1" % user)
                sites = {(await get(cluster, cookie)).json()["site"] for _ in range(4)}
                assert len(sites) == 1
        servers.cancel_scope.cancel()
