"""Retries, retry budgets, breakers and deadlines across real gateway processes.

* a service whose only endpoint always fails gets at most 1.2x the offered load, although
  each request may be retried three times (the retry budget), and more than 1x (retries
  do happen);
* a full breaker answers at once with a 503 naming it, without calling the endpoint;
* a GET that fails with a 5xx in its own site is retried in the next site; a POST with a body
  is retried only in its own site;
* the caller's deadline shrinks on the way (the second gateway's endpoint sees less than the
  caller sent) and an expired one is a 504 that never reaches an endpoint.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import trio

from gateway.demo.topology import DemoService
from tests.e2e.clients import h1_request
from tests.e2e.counting_server import Counting, serve_counting
from tests.e2e.harness import Overlay, make_topology, open_overlay, routes_of
from tests.gateway.cluster.status_server import serve_held

HTTP_PORT = 15080
WHOAMI = (DemoService("whoami", "http", 18080),)


_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback: no proxy


def _post(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with _OPENER.open(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _endpoint(service: str, address: str, port: int) -> str:
    # Appended to the static source (the last [[sources]] table).
    return (
        f'\n[[sources.endpoints]]\nservice = "{service}"\naddress = "{address}"\n'
        f'port = {port}\nprotocol = "http1"\n'
    )


async def _metrics(ov: Overlay, host: str) -> str:
    reply = await h1_request(host, ov.topology.admin_port, authority="admin", path="/metrics")
    assert reply.status == 200
    return reply.body.decode("utf-8")


NO_OUTLIERS = "\n[outlier_detection]\nconsecutive_5xx = 0\nconsecutive_connect_failures = 0\n"


async def test_a_failing_service_gets_at_most_1_2x_the_offered_load(tmp_path: Path) -> None:
    topology = make_topology(["east"], {"east": WHOAMI})
    addr = str(topology.sites[0].address)
    flaky = Counting(503, "flaky")
    async with trio.open_nursery() as servers:
        port = await servers.start(serve_counting, addr, flaky)

        def patch(site: str, text: str) -> str:
            return (
                text
                + _endpoint("flaky", addr, port)
                + '\n[[service_traffic]]\nservice = "flaky"\n'
                + '[service_traffic.retries]\non = ["5xx"]\nmax_retries = 3\n'
                + "backoff_base_s = 0.0\nbackoff_max_s = 0.0\n"
                + "[service_traffic.retries.budget]\nratio = 0.2\nmin_per_s = 0.0\n"
                + NO_OUTLIERS
            )

        async with open_overlay(tmp_path, topology, patch=patch) as ov:
            await ov.wait("east", "/routes", lambda d: routes_of(d, "flaky.default.isthmus"))
            offered = 100
            for _ in range(offered):
                reply = await h1_request(addr, HTTP_PORT, authority="flaky.default.isthmus")
                assert reply.status == 503 and reply.body == b"flaky"  # the endpoint's own
            load = len(flaky.seen)
            assert offered < load <= 1.2 * offered, load
            assert load >= 1.15 * offered  # the budget is spent, not starved
            metrics = await _metrics(ov, addr)
            assert "isthmus_retries_total{" in metrics
            assert "isthmus_retries_denied_total{" in metrics and 'reason="budget"' in metrics
        servers.cancel_scope.cancel()


async def test_a_full_breaker_answers_503_at_once_naming_it(tmp_path: Path) -> None:
    topology = make_topology(["east"], {"east": WHOAMI})
    addr = str(topology.sites[0].address)
    release = trio.Event()
    seen: list[int] = []
    async with trio.open_nursery() as servers:
        port = await servers.start(serve_held, addr, release, seen)

        def patch(site: str, text: str) -> str:
            return (
                text
                + _endpoint("busy", addr, port)
                + '\n[[service_traffic]]\nservice = "busy"\n'
                + "[service_traffic.breakers]\nmax_requests = 1\n"
            )

        async with open_overlay(tmp_path, topology, patch=patch) as ov:
            await ov.wait("east", "/routes", lambda d: routes_of(d, "busy.default.isthmus"))
            done: list[int] = []

            async def held() -> None:
                reply = await h1_request(addr, HTTP_PORT, authority="busy.default.isthmus")
                done.append(reply.status)

            async def arrived(count: int) -> None:
                for _ in range(400):  # bounded: at most 20 s for the held one to arrive
                    if len(seen) >= count:
                        break
                    await trio.sleep(0.05)
                assert len(seen) == count

            async def refused(limit: int) -> None:
                reply = await h1_request(
                    addr, HTTP_PORT, authority="busy.default.isthmus", request_timeout_s=10.0
                )
                assert reply.status == 503
                assert (
                    b"circuit breaker max_requests of busy.default in site east is full (%d in"
                    % limit
                ) in reply.body

            async with trio.open_nursery() as nursery:
                nursery.start_soon(held)
                await arrived(1)
                await refused(1)
                assert len(seen) == 1  # the endpoint was not called for it
                # Live: a reload that only raises the breaker applies to the next request.
                config = ov.built["east"].config_path
                config.write_text(
                    config.read_text("utf-8").replace("max_requests = 1\n", "max_requests = 2\n")
                )
                status, doc = await trio.to_thread.run_sync(
                    _post, ov.url("east") + "/config/reload"
                )
                assert status == 200 and doc["changes"] == ["service_traffic"], doc
                nursery.start_soon(held)
                await arrived(2)
                await refused(2)
                assert len(seen) == 2
                release.set()
            assert done == [200, 200]
            metrics = await _metrics(ov, addr)
            assert 'breaker="max_requests"' in metrics
        servers.cancel_scope.cancel()


async def test_retries_cross_sites_only_when_safe_and_deadlines_shrink(tmp_path: Path) -> None:
    topology = make_topology(["east", "west"], {"east": WHOAMI, "west": WHOAMI})
    east, west = (str(s.address) for s in topology.sites)
    failing = Counting(503, "east-flaky")
    good = Counting(200, "west-flaky")
    deadline_probe = Counting(200, "west-probe")
    async with trio.open_nursery() as servers:
        failing_port = await servers.start(serve_counting, east, failing)
        good_port = await servers.start(serve_counting, west, good)
        probe_port = await servers.start(serve_counting, west, deadline_probe)

        def patch(site: str, text: str) -> str:
            if site == "west":
                return (
                    text
                    + _endpoint("flaky", west, good_port)
                    + _endpoint("probe", west, probe_port)
                )
            return (
                text
                + _endpoint("flaky", east, failing_port)
                + '\n[[service_traffic]]\nservice = "flaky"\n'
                + '[service_traffic.retries]\non = ["5xx"]\nmax_retries = 1\n'
                + NO_OUTLIERS
            )

        async with open_overlay(tmp_path, topology, patch=patch) as ov:
            await ov.wait(
                "east",
                "/routes",
                lambda d: routes_of(d, "flaky.default.isthmus") == ["east", "west"],
            )
            await ov.wait("east", "/routes", lambda d: routes_of(d, "probe.default.isthmus"))

            # A GET: the local 503 is held back, the retry goes to the next site.
            reply = await h1_request(east, HTTP_PORT, authority="flaky.default.isthmus")
            assert (reply.status, reply.body) == (200, b"west-flaky")
            assert [s.method for s in failing.seen] == ["GET"]
            assert [s.method for s in good.seen] == ["GET"]

            # A POST with a body: retried in its own site only (with its body), never west.
            reply = await h1_request(
                east, HTTP_PORT, authority="flaky.default.isthmus", method="POST", body=b"pay 1"
            )
            assert (reply.status, reply.body) == (503, b"east-flaky")
            assert [(s.method, s.body) for s in failing.seen[1:]] == [("POST", b"pay 1")] * 2
            assert len(good.seen) == 1

            # The deadline: the caller's 3 s shrink on the way; the far endpoint sees less.
            reply = await h1_request(
                east,
                HTTP_PORT,
                authority="probe.default.isthmus",
                headers={"x-isthmus-deadline-ms": "3000"},
            )
            assert reply.status == 200
            left = int(deadline_probe.seen[-1].headers["x-isthmus-deadline-ms"])
            assert 0 < left < 3000
            # ... and a hop never extends it: 60 s asked, the route timeout (15 s) holds.
            reply = await h1_request(
                east,
                HTTP_PORT,
                authority="probe.default.isthmus",
                headers={"x-isthmus-deadline-ms": "60000"},
            )
            assert int(deadline_probe.seen[-1].headers["x-isthmus-deadline-ms"]) <= 15000

            # An expired deadline: 504 at once; the endpoint's counter does not move.
            before = len(deadline_probe.seen)
            reply = await h1_request(
                east,
                HTTP_PORT,
                authority="probe.default.isthmus",
                headers={"x-isthmus-deadline-ms": "0"},
            )
            assert reply.status == 504 and b"deadline had passed" in reply.body
            assert len(deadline_probe.seen) == before
        servers.cancel_scope.cancel()
