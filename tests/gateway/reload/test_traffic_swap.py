"""The reload's swaps of [[service_traffic]] parts on real endpoints: a balancer swapped for
new requests (requests under way finish on the old one, the hash ring moves nothing), and
the active health checker restarted with its states carried over."""

from __future__ import annotations

from collections.abc import Callable

import immutables
import trio

from discovery.model import ServiceName
from discovery.watch import Watch
from gateway.cluster.balancer import BalancerChoice, BalancerFor
from gateway.cluster.health_checker import CheckMemory, Failing
from gateway.cluster.local import LocalCluster
from gateway.config.model import HealthCheckConfig, ServiceTrafficConfig
from gateway.demo.services import serve_http_echo
from gateway.http.exchange import CallContext, EmptyBody, Request
from gateway.reload.scoped import ScopedTasks
from gateway.reload.traffic import HEALTH_CHECKS_KEY, HealthChecks
from gateway.upstream.pool import UpstreamPool
from tests.gateway.cluster.status_server import serve_held
from tests.gateway.upstream.upstream_kit import (
    SVC,
    RecordingWriter,
    endpoint,
    refused_port,
    watch_of,
)

WRR = BalancerChoice()
BY_USER = BalancerChoice("ring_hash", hash_header=b"x-user")
BY_TENANT = BalancerChoice("ring_hash", hash_header=b"x-tenant")
LEAST = BalancerChoice("least_request")
HANG_GUARD_S = 20.0


def only(choice: BalancerChoice) -> BalancerFor:
    def balancer_for(_service: ServiceName) -> BalancerChoice:
        return choice

    return balancer_for


async def get(cluster: LocalCluster, *headers: tuple[bytes, bytes]) -> str:
    writer = RecordingWriter()
    req = Request(b"GET", b"http", b"api.default.isthmus", b"/", tuple(headers))
    ctx = CallContext("here", None, trio.current_time() + 10)
    await cluster.forward(req, EmptyBody(), writer, ctx, service=SVC)
    assert writer.status == 200
    return str(writer.json()["site"])


def _user(n: int) -> tuple[tuple[bytes, bytes], tuple[bytes, bytes]]:
    value = b"user-%d" % n
    return (b"x-user", value), (b"x-tenant", value)


async def _until(condition: Callable[[], bool]) -> None:
    """Poll ``condition`` (bounded in count: a hang guard, not a speed assertion)."""
    for _ in range(int(HANG_GUARD_S / 0.01)):
        if condition():
            return
        await trio.sleep(0.01)
    raise AssertionError("the condition never held")


async def test_a_balancer_swap_applies_to_new_requests_and_the_ring_moves_nothing() -> None:
    async with trio.open_nursery() as servers:
        ports = [await servers.start(serve_http_echo, "127.0.0.1", 0, f"e{i}") for i in range(3)]
        pool = UpstreamPool()
        await servers.start(pool.serve)
        cluster = LocalCluster(
            local_site="here", catalog=watch_of(*(endpoint(p) for p in ports)), pool=pool
        )
        # Round robin: the same user is spread over every endpoint.
        assert {await get(cluster, *_user(1)) for _ in range(3)} == {"e0", "e1", "e2"}
        cluster.set_balancers(only(BY_USER))
        where = {n: await get(cluster, *_user(n)) for n in range(12)}
        assert len(set(where.values())) >= 2
        for n in range(12):  # each user sticks
            assert await get(cluster, *_user(n)) == where[n]
        ring = cluster._rings[SVC]
        # Another hash key with the same values: the same ring, nobody moves.
        cluster.set_balancers(only(BY_TENANT))
        assert cluster._rings[SVC] is ring
        assert {n: await get(cluster, *_user(n)) for n in range(12)} == where
        # Away from the ring and back: the ring is dropped (bounded memory) and rebuilt the
        # same, so every user lands where it did.
        cluster.set_balancers(only(WRR))
        assert SVC not in cluster._rings
        assert {await get(cluster, *_user(1)) for _ in range(3)} == {"e0", "e1", "e2"}
        cluster.set_balancers(only(BY_USER))
        assert {n: await get(cluster, *_user(n)) for n in range(12)} == where
        servers.cancel_scope.cancel()


async def test_a_request_under_way_finishes_on_the_old_balancer() -> None:
    held: list[int] = []
    release = trio.Event()
    async with trio.open_nursery() as servers:
        busy = await servers.start(serve_held, "127.0.0.1", release, held)
        pool = UpstreamPool()
        await servers.start(pool.serve)
        cluster = LocalCluster(
            local_site="here",
            catalog=watch_of(endpoint(busy)),
            pool=pool,
            balancer_for=only(LEAST),
        )
        answers: list[int] = []

        async def call() -> None:
            writer = RecordingWriter()
            req = Request(b"GET", b"http", b"api.default.isthmus", b"/", ())
            ctx = CallContext("here", None, trio.current_time() + 30)
            await cluster.forward(req, EmptyBody(), writer, ctx, service=SVC)
            answers.append(writer.status)

        async with trio.open_nursery() as calls:
            calls.start_soon(call)
            await _until(lambda: bool(held))
            assert cluster._in_flight == {("127.0.0.1", busy): 1}  # counted by least request
            cluster.set_balancers(only(WRR))
            release.set()
        assert answers == [200]
        assert cluster._in_flight == {}  # the old balancer's count ended with its request
        servers.cancel_scope.cancel()


def _rule(service: str, check: HealthCheckConfig | None) -> ServiceTrafficConfig:
    return ServiceTrafficConfig(service=service, health_check=check)


async def test_the_health_checker_restarts_with_its_states_carried_over() -> None:
    async with trio.open_nursery() as servers:
        good = endpoint(await servers.start(serve_http_echo, "127.0.0.1", 0, "good"))
        dead = endpoint(await refused_port())
        failing: Watch[Failing] = Watch(immutables.Map())
        memory = CheckMemory()
        scoped = ScopedTasks()
        checks = HealthChecks(scoped, watch_of(good, dead), failing, memory)
        # Probed at start, then not for an hour: one failure, still healthy.
        slow = HealthCheckConfig(interval_s=3600.0, timeout_s=5.0, unhealthy_threshold=2)
        rules_slow = (_rule("api", slow),)
        await checks.start(servers, rules_slow)
        await _until(lambda: dead.key in memory.states and good.key in memory.states)
        assert memory.states[dead.key].failures == 1 and memory.states[dead.key].healthy
        assert dict(failing.latest) == {}
        # A changed check: the checker restarts and probes at once on the new interval.
        fast = HealthCheckConfig(interval_s=0.05, timeout_s=5.0, unhealthy_threshold=2)
        rules_fast = (_rule("api", fast),)
        await checks.restart(servers, rules_slow, rules_fast)
        assert scoped.keys() == (HEALTH_CHECKS_KEY,)
        await _until(lambda: dead.key in failing.latest)
        assert list(failing.latest) == [dead.key]
        # A rule for another service added: api's check is the same, its mark stays at once.
        with_db = (_rule("db", slow), *rules_fast)
        await checks.restart(servers, rules_fast, with_db)
        assert list(failing.latest) == [dead.key] and not memory.states[dead.key].healthy
        # The check removed: no checker runs and the mark is cleared at once.
        await checks.restart(servers, with_db, (_rule("api", None),))
        assert scoped.keys() == ()
        assert dict(failing.latest) == {} and memory.states == {}
        servers.cancel_scope.cancel()
