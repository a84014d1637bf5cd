"""Passive outlier detection in worker mode (``[site] workers = 2``), on real processes.

Detection runs in each worker, from the requests that worker served; ``/catalog`` and the
export to peers are the supervisor's.  An endpoint that answers 5xx is ejected by the worker
that saw the failures, and the site shows it exactly as a single-process gateway does
(tests/e2e/test_outlier_detection.py): not routable in the supervisor's ``/catalog``, with the
reason, and not healthy in the peer's ``/imports`` (so the peer stops routing it); and the
overlay map's traffic figures (``/overlay``) count the workers' requests.  When the
workers that ejected it are gone (killed: their replacements start with no record), the
endpoint is routable again, at the site and at the peer.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import trio

from gateway.demo.topology import DemoService
from tests.e2e.clients import h1_request
from tests.e2e.harness import make_topology, open_overlay, routes_of, with_site
from tests.e2e.proc_owner import alive, children_of
from tests.gateway.cluster.status_server import serve_status

HTTP_PORT = 15080
WHOAMI = (DemoService("whoami", "http", 18080),)
WORKERS = 2
# With two workers and a threshold of two, three requests give some worker two in a row
# (pigeonhole), whichever worker the kernel hands each new connection to.
REQUESTS = WORKERS + 1
WAIT_S = 30.0  # hang guard for each state change


def _imported(doc: Any, site: str, service: str) -> dict[str, Any] | None:
    for peer in doc["peers"]:
        if peer["site"] == site:
            for svc in peer["services"]:
                if svc["service"] == service:
                    return dict(svc)
    return None


def _catalog_row(doc: Any, service: str) -> dict[str, Any] | None:
    return next((e for e in doc["endpoints"] if e["service"] == service), None)


def _local_rate(doc: Any, site: str) -> float:
    """Requests per second that ``site``'s own callers had answered at ``site`` (``/overlay``)."""
    node = next(n for n in doc["nodes"] if n["site"] == site)
    local = (node.get("traffic") or {}).get("local") or {}
    return float(local.get("requests_per_s") or 0.0)


def _worker_pids(doc: Any) -> list[int]:
    return sorted(int(r["pid"]) for r in doc["workers"] if r.get("pid") and r.get("serving"))


async def test_a_workers_ejection_shows_at_the_supervisor_and_at_the_peer(
    tmp_path: Path,
) -> None:
    topology = make_topology(["east", "west"], {"east": WHOAMI, "west": WHOAMI})
    topology = with_site(topology, "east", workers=WORKERS)
    east_addr = str(topology.sites[0].address)
    seen: list[int] = []
    async with trio.open_nursery() as servers:
        flaky_port = await servers.start(serve_status, east_addr, 503, seen)

        def patch(site: str, text: str) -> str:
            if site != "east":
                return text
            return text + (
                "\n[outlier_detection]\nconsecutive_5xx = 2\nbase_ejection_time_s = 600.0\n"
                "max_ejection_time_s = 600.0\n"
                # Appended to the static source (the last [[sources]] table).
                f'\n[[sources.endpoints]]\nservice = "flaky"\naddress = "{east_addr}"\n'
                f'port = {flaky_port}\nprotocol = "http1"\n'
            )

        async with open_overlay(tmp_path, topology, patch=patch) as ov:
            workers = await ov.wait(
                "east", "/workers", lambda d: len(_worker_pids(d)) == WORKERS, within_s=WAIT_S
            )
            pids = _worker_pids(workers)
            assert sorted(children_of(ov.children["east"].process.pid)) == pids
            await ov.wait(
                "west",
                "/imports",
                lambda d: (_imported(d, "east", "flaky") or {}).get("healthy") == 1,
                within_s=WAIT_S,
            )
            await ov.wait(
                "west", "/routes", lambda d: routes_of(d, "flaky.default.isthmus") == ["east"]
            )

            overlay = await ov.get("east", "/overlay")  # the map's first traffic sample
            assert overlay["metrics"] is True
            for _ in range(REQUESTS):  # each on a new connection: spread over the workers
                reply = await h1_request(east_addr, HTTP_PORT, authority="flaky.default.isthmus")
                assert reply.status == 503
            # Some worker saw two 503s in a row and ejected the endpoint: the requests it
            # got after that never reached the endpoint.
            assert seen in ([503, 503], [503, 503, 503]), seen

            # east, the supervisor (which served none of these): not routable, the reason.
            doc = await ov.wait(
                "east",
                "/catalog",
                lambda d: (_catalog_row(d, "flaky") or {}).get("routable") is False,
                within_s=WAIT_S,
            )
            row = _catalog_row(doc, "flaky")
            assert row is not None and row["healthy"] is True
            assert "2 consecutive 5xx" in row["ejected"]
            # whoami is untouched.
            assert (_catalog_row(doc, "whoami") or {}).get("routable") is True

            # The workers' ejections are counted in the site's metrics (1 or 2 of them: the
            # other worker may have seen two 503s in a row too).
            reply = await h1_request(
                east_addr, ov.topology.admin_port, authority="admin", path="/metrics"
            )
            counted = [
                line
                for line in reply.body.decode().splitlines()
                if line.startswith('isthmus_outlier_ejections_total{service="flaky.default"} ')
            ]
            assert len(counted) == 1 and float(counted[0].split()[-1]) in (1.0, 2.0), counted

            # The map's traffic figures at east count the workers' requests (the supervisor's
            # own counters saw none of them).
            await ov.wait("east", "/overlay", lambda d: _local_rate(d, "east") > 0, within_s=WAIT_S)

            # west: the export shows it as not routable, and west stops routing it.
            doc = await ov.wait(
                "west",
                "/imports",
                lambda d: (_imported(d, "east", "flaky") or {}).get("healthy") == 0,
                within_s=WAIT_S,
            )
            flaky = _imported(doc, "east", "flaky")
            assert flaky is not None and flaky["total"] == 1
            await ov.wait(
                "west", "/routes", lambda d: routes_of(d, "flaky.default.isthmus") is None
            )

            # The workers go (SIGKILL, by the PIDs /workers lists: the supervisor's children);
            # their replacements start with no record, so no worker ejects the endpoint any
            # more: it is routable again at east and healthy again at west.
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            await ov.wait(
                "east",
                "/catalog",
                lambda d: (_catalog_row(d, "flaky") or {}).get("routable") is True,
                within_s=WAIT_S,
            )
            await ov.wait(
                "west",
                "/imports",
                lambda d: (_imported(d, "east", "flaky") or {}).get("healthy") == 1,
                within_s=WAIT_S,
            )
            restarted = await ov.wait(
                "east",
                "/workers",
                lambda d: len(_worker_pids(d)) == WORKERS and not set(_worker_pids(d)) & set(pids),
                within_s=WAIT_S,
            )
            assert not any(alive(pid) for pid in pids), restarted
        servers.cancel_scope.cancel()
