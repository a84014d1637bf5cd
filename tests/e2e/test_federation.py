"""Catalog federation across real gateway processes on loopback (issue 4).

Three gateways, each its own trust domain and development CA; site ``east`` learns its local
services from a Consul-API test server, the others from static config.  Everything here is
real: processes, sockets, mTLS, HTTP/2; only Consul is the documented-API stand-in.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import trio

from gateway.demo.topology import DemoService
from tests.consul_api.server import open_consul_api_server
from tests.e2e.clients import h1_request
from tests.e2e.harness import make_topology, open_overlay, routes_of

WEB = (DemoService("web", "http", 18080),)


def _consul_source(url: str) -> str:
    return f'\n[[sources]]\nkind = "consul"\nname = "consul"\naddress = "{url}"\nwait_s = 5.0\n'


def _imported(doc: Any, site: str, service: str) -> dict[str, Any] | None:
    for peer in doc["peers"]:
        if peer["site"] == site:
            for svc in peer["services"]:
                if svc["service"] == service:
                    return dict(svc) | {"stale": peer["stale"]}
    return None


async def test_exports_reach_every_peer_and_follow_changes(tmp_path: Path) -> None:
    topology = make_topology(["east", "west", "north"], {"east": WEB, "west": WEB, "north": WEB})
    async with open_consul_api_server() as consul:

        def patch(site: str, text: str) -> str:
            return text + _consul_source(consul.url) if site == "east" else text

        async with open_overlay(tmp_path, topology, patch=patch) as ov:
            # Every site routes web.default to all three sites, itself first.
            for site in ("east", "west", "north"):
                doc = await ov.wait(
                    site, "/routes", lambda d: len(routes_of(d, "web.default.isthmus") or []) == 3
                )
                assert routes_of(doc, "web.default.isthmus")[0] == site  # type: ignore[index]

            # An endpoint added in Consul at east reaches both peers (within ov.wait's 20 s
            # hang guard; how fast is measured by scripts/bench_federation.py).
            consul.register_service("orders", 19000, tags=("v1",))
            for site in ("west", "north"):
                doc = await ov.wait(
                    site, "/routes", lambda d: routes_of(d, "orders.default.isthmus") == ["east"]
                )
            doc = await ov.get("west", "/imports")
            orders = _imported(doc, "east", "orders")
            assert orders is not None and orders["healthy"] == 1 and orders["total"] == 1
            assert "address" not in orders  # aggregates only: addresses never leave the site

            # The endpoint turns unhealthy: peers keep the service (healthy 0), stop routing.
            consul.set_check("node-1", "service:orders-19000", "critical")
            doc = await ov.wait(
                "west",
                "/imports",
                lambda d: (_imported(d, "east", "orders") or {}).get("healthy") == 0,
            )
            doc = await ov.get("west", "/routes")
            assert routes_of(doc, "orders.default.isthmus") is None

            # The service is removed: it leaves the peers' imports.
            consul.deregister({"Node": "node-1", "ServiceID": "orders-19000"})
            await ov.wait("north", "/imports", lambda d: _imported(d, "east", "orders") is None)


async def test_killed_gateway_turns_stale_then_leaves_and_returns(tmp_path: Path) -> None:
    grace_s = 3.0
    topology = make_topology(
        ["east", "west", "north"],
        {"east": WEB, "west": WEB, "north": (DemoService("reports", "http", 18090),)},
        import_grace_s=grace_s,
    )
    detect_bound_s = topology.ping_interval_s + topology.ping_timeout_s
    # Hang guard, 5x the longest the withdrawal may take (detection, then the grace).  How
    # long detection and withdrawal take is measured by scripts/bench_failover.py.
    guard_s = 5 * (detect_bound_s + grace_s)
    async with open_overlay(tmp_path, topology) as ov:
        await ov.wait(
            "east", "/routes", lambda d: routes_of(d, "reports.default.isthmus") == ["north"]
        )
        # Taken before the kill: east may notice the closed link before kill() has reaped
        # the process, and the grace runs from that moment.
        killed = time.monotonic()
        await ov.kill("north")
        # Routes drop north as soon as its link is declared down (PING deadline)...
        await ov.wait(
            "east",
            "/routes",
            lambda d: routes_of(d, "reports.default.isthmus") is None,
            within_s=5 * detect_bound_s,
        )
        # ...while its imports are kept, marked stale, for the grace (the mark lands when the
        # import stream's task unwinds, a moment after the route view: wait for one of the two
        # outcomes, a stale copy or none, and require the first)...
        doc = await ov.wait(
            "east",
            "/imports",
            lambda d: (r := _imported(d, "north", "reports")) is None or r["stale"] is True,
            within_s=guard_s,
        )
        reports = _imported(doc, "north", "reports")
        assert reports is not None and reports["stale"] is True
        # ...and then withdrawn, never before the grace has run out.
        await ov.wait(
            "east", "/imports", lambda d: _imported(d, "north", "reports") is None, within_s=guard_s
        )
        assert time.monotonic() - killed >= grace_s

        # A restarted gateway is rejoined without operator action; no duplicates.
        await ov.start("north")
        doc = await ov.wait(
            "east", "/routes", lambda d: routes_of(d, "reports.default.isthmus") == ["north"]
        )
        doc = await ov.get("east", "/imports")
        north = [p for p in doc["peers"] if p["site"] == "north"]
        assert len(north) == 1 and not north[0]["stale"]
        assert [s["service"] for s in north[0]["services"]] == ["reports"]


async def test_both_directions_use_one_link_for_an_outbound_only_site(tmp_path: Path) -> None:
    """``nat`` can dial out only: ``hub`` never dials it, yet both export to each other."""
    topology = make_topology(
        ["hub", "nat"], {"hub": WEB, "nat": (DemoService("batch", "http", 18091),)}
    )

    def patch(site: str, text: str) -> str:
        if site == "hub":  # hub must not dial nat (it could not reach it behind NAT)
            return text.replace("dial = true", "dial = false")
        return text

    async with open_overlay(tmp_path, topology, patch=patch) as ov:
        await ov.wait("hub", "/routes", lambda d: routes_of(d, "batch.default.isthmus") == ["nat"])
        await ov.wait("nat", "/routes", lambda d: routes_of(d, "web.default.isthmus") == ["hub"])
        links = await ov.get("hub", "/links")
        assert links["nat"]["dialed_link"] is False and links["nat"]["accepted_link"] is True
        assert links["nat"]["up"] is True
        # nat restarts: hub gets a new inbound link; retiring the old one must not take the
        # new one down with it (hub cannot dial nat to recover).
        await ov.kill("nat")
        await ov.start("nat")
        await ov.wait("hub", "/links", lambda d: d["nat"]["links_established"] >= 2)
        await trio.sleep(2.0)  # past the PING deadline (0.5 s + 1.0 s) of any old link
        links = await ov.get("hub", "/links")
        assert links["nat"]["up"] is True, links["nat"]
        doc = await ov.get("hub", "/routes")
        assert routes_of(doc, "batch.default.isthmus") == ["nat"]


async def test_survivor_routes_to_a_restarted_peer_over_the_link_the_peer_dialed(
    tmp_path: Path,
) -> None:
    """A restarted gateway dials its peers at once; the survivor must send over that link
    instead of waiting for its own redial, which the backoff has pushed far out.

    ``east``'s backoff is configured never to redial sooner than 600 s after a link dropped
    (``backoff_floor_s``).  ``north`` is killed, then restarted; ``east`` must route to it
    again (``/routes``, and a real request answered by north) over the link *north* dialed.
    The hang guard around restart and recovery, 60 s, is a tenth of that floor: whatever the
    machine's speed, east's own dial cannot have happened, and ``/links`` confirms it."""
    floor_s = 600.0
    topology = make_topology(["east", "north"], {"north": (DemoService("reports", "http", 18090),)})

    def patch(site: str, text: str) -> str:
        if site != "east":
            return text
        text = text.replace("backoff_base_s = 0.2", "backoff_base_s = 60.0")
        text = text.replace("backoff_cap_s = 5.0", f"backoff_cap_s = {floor_s}")
        return text.replace("[peering]\n", f"[peering]\nbackoff_floor_s = {floor_s}\n")

    def north_routed(doc: Any) -> bool:
        return routes_of(doc, "reports.default.isthmus") == ["north"]

    async with open_overlay(tmp_path, topology, patch=patch, services=True) as ov:
        east = str(ov.built["east"].site.address)
        await ov.wait("east", "/routes", north_routed)
        await ov.kill("north")
        await ov.wait("east", "/links", lambda d: d["north"]["up"] is False)
        # From here east's own next dial to north is at least ``floor_s`` away.
        reply = None
        with trio.fail_after(floor_s / 10):  # hang guard, not a speed claim
            await ov.start("north")
            await ov.wait("east", "/routes", north_routed, within_s=floor_s / 10)
            for _ in range(1000):
                reply = await h1_request(east, 15080, authority="reports.default.isthmus")
                if reply.status == 200:
                    break
                await trio.sleep(0.05)
            links = await ov.get("east", "/links")
        assert reply is not None and reply.status == 200 and reply.json()["site"] == "north"
        assert links["north"]["dialed_link"] is False, links["north"]  # east has not redialled
        assert links["north"]["accepted_link"] is True and links["north"]["up"] is True
