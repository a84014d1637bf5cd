"""Active health checks: thresholds (pure), probes against real endpoints, the checker loop."""

from __future__ import annotations

import immutables
import trio
from hypothesis import given
from hypothesis import strategies as st

from discovery.model import EndpointKey, ServiceName
from discovery.snapshot import Catalog
from discovery.watch import Watch
from gateway.cluster.health_check import CheckPolicy, CheckState, after_probe
from gateway.cluster.health_checker import probe, serve_health_checks
from gateway.cluster.local import LocalCluster
from gateway.cluster.outlier_detector import OutlierDetector, serve_effective_catalog
from gateway.demo.services import serve_http_echo
from gateway.upstream.pool import UpstreamPool
from tests.gateway.cluster.status_server import serve_held, serve_status
from tests.gateway.upstream.upstream_kit import SVC, endpoint, refused_port, watch_of

POLICY = CheckPolicy(healthy_threshold=2, unhealthy_threshold=3)


@given(probes=st.lists(st.booleans(), max_size=40))
def test_state_follows_runs_of_the_thresholds(probes: list[bool]) -> None:
    state = CheckState()
    healthy = True
    run_ok = run_bad = 0
    for ok in probes:
        state = after_probe(state, None if ok else "connect failed", POLICY)
        run_ok, run_bad = (run_ok + 1, 0) if ok else (0, run_bad + 1)
        if healthy and run_bad >= 3:
            healthy = False
        elif not healthy and run_ok >= 2:
            healthy = True
        assert state.healthy == healthy
        assert (state.reason != "") == (not healthy)
    if not healthy:
        assert "failed probes in a row, last: connect failed" in state.reason


async def test_probes_against_real_endpoints() -> None:
    http = CheckPolicy(kind="http", path="/healthz", timeout=5.0)
    tcp = CheckPolicy(kind="tcp", timeout=5.0)
    seen: list[int] = []
    release = trio.Event()
    async with trio.open_nursery() as servers:
        good = await servers.start(serve_http_echo, "127.0.0.1", 0, "good")
        failing = await servers.start(serve_status, "127.0.0.1", 503, seen)
        silent = await servers.start(serve_held, "127.0.0.1", release, seen)
        refused = await refused_port()
        assert await probe(endpoint(good), http) is None
        assert await probe(endpoint(failing), http) == "HTTP 503"
        assert await probe(endpoint(failing), tcp) is None  # it does accept connections
        assert "connect failed" in str(await probe(endpoint(refused), tcp))
        short = CheckPolicy(kind="http", timeout=0.2)
        assert await probe(endpoint(silent), short) == "no answer within 0.2s"
        release.set()
        servers.cancel_scope.cancel()


async def test_checker_takes_a_dead_endpoint_out_everywhere() -> None:
    policy = CheckPolicy(kind="tcp", interval=0.05, timeout=1.0, unhealthy_threshold=2)
    async with trio.open_nursery() as servers:
        good = await servers.start(serve_http_echo, "127.0.0.1", 0, "good")
        dead = endpoint(await refused_port())
        catalog = watch_of(endpoint(good), dead)
        failing: Watch[immutables.Map[EndpointKey, str]] = Watch(immutables.Map())
        effective: Watch[Catalog] = Watch(Catalog())
        detector = OutlierDetector()

        def check_for(service: ServiceName) -> CheckPolicy | None:
            return policy if service == SVC else None

        async with trio.open_nursery() as nursery:
            await nursery.start(serve_health_checks, catalog, check_for, failing)
            await nursery.start(
                serve_effective_catalog, catalog, detector.ejections, effective, failing
            )
            with trio.fail_after(20):  # hang guard (2 probes 0.05 s apart are needed)
                while dead.key not in failing.latest:
                    await failing.wait_newer(failing.count)
            assert list(failing.latest) == [dead.key]
            assert "2 failed probes in a row" in failing.latest[dead.key]
            cluster = LocalCluster(
                local_site="here",
                catalog=catalog,
                pool=UpstreamPool(),
                outlier=detector,
                failing=failing,
            )
            assert cluster.endpoints(SVC) == (endpoint(good),)
            with trio.fail_after(20):
                while effective.latest.ejected.get(dead.key) is None:
                    await effective.wait_newer(effective.count)
            nursery.cancel_scope.cancel()
        servers.cancel_scope.cancel()
