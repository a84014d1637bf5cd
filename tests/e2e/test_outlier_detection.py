"""Passive outlier detection across real gateway processes: an endpoint that answers 5xx is
ejected at its site, and the peer's imported view shows it as not routable."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from gateway.demo.topology import DemoService
from tests.e2e.clients import h1_request
from tests.e2e.harness import make_topology, open_overlay, routes_of
from tests.gateway.cluster.status_server import serve_status

HTTP_PORT = 15080
WHOAMI = (DemoService("whoami", "http", 18080),)


def _imported(doc: Any, site: str, service: str) -> dict[str, Any] | None:
    for peer in doc["peers"]:
        if peer["site"] == site:
            for svc in peer["services"]:
                if svc["service"] == service:
                    return dict(svc)
    return None


def _catalog_row(doc: Any, service: str) -> dict[str, Any] | None:
    return next((e for e in doc["endpoints"] if e["service"] == service), None)


async def test_a_5xx_endpoint_is_ejected_and_leaves_the_peers_view(tmp_path: Path) -> None:
    topology = make_topology(["east", "west"], {"east": WHOAMI, "west": WHOAMI})
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
            doc = await ov.wait(
                "west",
                "/imports",
                lambda d: (_imported(d, "east", "flaky") or {}).get("healthy") == 1,
            )
            await ov.wait(
                "west", "/routes", lambda d: routes_of(d, "flaky.default.isthmus") == ["east"]
            )

            for _ in range(2):  # two 503s in a row from the endpoint itself
                reply = await h1_request(east_addr, HTTP_PORT, authority="flaky.default.isthmus")
                assert reply.status == 503 and reply.body == b"fail"
            assert seen == [503, 503]

            # east: not routable, with the reason; the endpoint gets no more requests.
            doc = await ov.get("east", "/catalog")
            row = _catalog_row(doc, "flaky")
            assert row is not None and row["routable"] is False and row["healthy"] is True
            assert "2 consecutive 5xx" in row["ejected"]
            reply = await h1_request(east_addr, HTTP_PORT, authority="flaky.default.isthmus")
            assert reply.status == 503 and reply.body != b"fail"  # the gateway's own answer
            assert seen == [503, 503]
            reply = await h1_request(
                east_addr, ov.topology.admin_port, authority="admin", path="/metrics"
            )
            assert 'isthmus_outlier_ejections_total{service="flaky.default"} 1\n' in (
                reply.body.decode()
            )

            # west: the exported counts show it as not routable, and west stops routing it.
            doc = await ov.wait(
                "west",
                "/imports",
                lambda d: (_imported(d, "east", "flaky") or {}).get("healthy") == 0,
            )
            flaky = _imported(doc, "east", "flaky")
            assert flaky is not None and flaky["total"] == 1
            doc = await ov.get("west", "/routes")
            assert routes_of(doc, "flaky.default.isthmus") is None
            # whoami, healthy, is untouched.
            doc = await ov.get("west", "/imports")
            assert (_imported(doc, "east", "whoami") or {})["healthy"] == 1
        servers.cancel_scope.cancel()


async def test_an_active_health_check_takes_a_dead_endpoint_out_of_the_peers_view(
    tmp_path: Path,
) -> None:
    topology = make_topology(["east", "west"], {"east": WHOAMI, "west": WHOAMI})
    east_addr = str(topology.sites[0].address)
    # A port on east's address that nothing listens on: the endpoint is dead from the start
    # (its source still says healthy), and no request ever goes to it.
    sock = trio.socket.socket()
    await sock.bind((east_addr, 0))
    dead_port = sock.getsockname()[1]
    sock.close()

    def patch(site: str, text: str) -> str:
        if site != "east":
            return text
        return text + (
            '\n[[service_traffic]]\nservice = "dead"\n'
            '[service_traffic.health_check]\nkind = "tcp"\ninterval_s = 0.2\ntimeout_s = 0.2\n'
            "unhealthy_threshold = 2\n"
            f'\n[[sources.endpoints]]\nservice = "dead"\naddress = "{east_addr}"\n'
            f'port = {dead_port}\nprotocol = "http1"\n'
        )

    async with open_overlay(tmp_path, topology, patch=patch) as ov:
        doc = await ov.wait(
            "west",
            "/imports",
            lambda d: (
                (_imported(d, "east", "dead") or {}).get("total") == 1
                and _imported(d, "east", "dead")["healthy"] == 0
            ),  # type: ignore[index]
        )
        doc = await ov.get("east", "/catalog")
        row = _catalog_row(doc, "dead")
        assert row is not None and row["routable"] is False
        assert "health check: " in row["ejected"] and "connect failed" in row["ejected"]
        reply = await h1_request(east_addr, HTTP_PORT, authority="dead.default.isthmus")
        assert reply.status == 503
