"""Several gateways per site, on real gateway processes.

Site ``b`` runs two replicas: two ``isthmus run`` processes with the same site name and trust
domain, each with its own SVID (same SPIFFE ID, own key) and its own whoami endpoint.  Site
``a`` lists both in ``[[peers]] addresses``.  Callers at ``a`` keep calling b's service while
one replica is killed (SIGKILL, by PID) and later restarted: no request fails (GET is safe to
retry), a's ``/routes`` never loses b's service, and both replicas serve before and after.

To be sure requests are on the killed replica's link when it dies, a second service ("slow",
a counting endpoint per replica that holds each request for a while) is called too, and the
kill waits until the replica's endpoint holds one: that request must then be answered by
the other replica.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import trio

from gateway.demo.runner import service_argv, start_child
from gateway.demo.topology import BuiltSite, DemoService, gateway_config_text
from overlay.identity.ca import issue_svid
from tests.e2e.clients import h1_request
from tests.e2e.counting_server import Counting, serve_counting
from tests.e2e.harness import Overlay, make_topology, open_overlay, routes_of

HTTP_PORT = 15080
EW_PORT = 15443
WHOAMI_PORT = 18180
AUTHORITY = "whoami.default.isthmus"
SLOW = "slow.default.isthmus"
SLOW_DELAY_S = 0.5
WORKERS = 4
MAX_REQUESTS = 3000  # per worker: bounded in count...
WITHIN_S = 180.0  # ...and in time (a hang guard, never a speed assertion)


def _second_address(ov: Overlay) -> ipaddress.IPv4Address:
    first = ov.built["b"].site.address
    return ipaddress.IPv4Address(int(first) + 1)  # 127.x.2.1 -> 127.x.2.2


def _with_slow(text: str, address: str, port: int) -> str:
    """A replica's config with the "slow" endpoint in its static source."""
    block = (
        f'[[sources.endpoints]]\nservice = "slow"\nnamespace = "default"\n'
        f'address = "{address}"\nport = {port}\nprotocol = "http1"\n\n[[exports]]'
    )
    assert text.count("[[exports]]") == 1
    return text.replace("[[exports]]", block)


def _both_replicas(site: str, text: str, b1: str, b2: str, slow_port: int) -> str:
    """a's config: peer b by its two replicas' addresses instead of one."""
    if site == "b":
        return _with_slow(text, b1, slow_port)
    if site != "a":
        return text
    one = f'address = "{b1}"\nport = {EW_PORT}\n'
    assert text.count(one) == 1, text
    return text.replace(one, f'addresses = ["{b1}:{EW_PORT}", "{b2}:{EW_PORT}"]\n')


async def _add_second_replica(ov: Overlay, slow_port: int) -> None:
    """b's second gateway: b's config on the next loopback address, with its own SVID (the
    same SPIFFE ID, issued by b's CA) and its own whoami endpoint (it says "b2")."""
    b = ov.built["b"]
    address = _second_address(ov)
    directory = ov.root / "b2"
    ca_dir = ov.root / "ca" / b.site.trust_domain.name
    await trio.to_thread.run_sync(issue_svid, ca_dir, b.site.gateway_id, directory / "identity")
    site = type(b.site)(
        name="b",
        trust_domain=b.site.trust_domain,
        address=address,
        services=b.site.services,
        priority=b.site.priority,
    )
    text = gateway_config_text(ov.topology, site, ov.root.resolve())
    text = text.replace(str(ov.root.resolve() / "b" / "identity"), str(directory / "identity"))
    assert str(directory / "identity" / "svid.pem") in text
    text = _with_slow(text, str(address), slow_port)
    config = directory / "gateway.toml"
    config.write_text(text, "utf-8")
    ov.built["b2"] = BuiltSite(site, config, directory)
    argv = service_argv("http", str(address), WHOAMI_PORT, "b2")
    ov.children["b2/whoami"] = await start_child("b2/whoami", argv, directory / "whoami.log")
    await ov.start("b2")


async def _call(ov: Overlay, authority: str = AUTHORITY) -> str:
    host = str(ov.built["a"].site.address)
    reply = await h1_request(host, HTTP_PORT, authority=authority, request_timeout_s=20)
    assert reply.status == 200, (reply.status, reply.body[:300])
    return reply.body.decode() if authority == SLOW else str(reply.json()["site"])


def _replicas_up(doc: dict[str, dict[str, object]]) -> int:
    return int(doc.get("b", {}).get("replicas_up", 0))  # type: ignore[call-overload]


async def test_a_replica_killed_and_restarted_under_load(tmp_path: Path) -> None:
    topology = make_topology(["a", "b"], {"b": (DemoService("whoami", "http", WHOAMI_PORT),)})
    b1 = str(topology.sites[1].address)
    b2 = str(ipaddress.IPv4Address(int(topology.sites[1].address) + 1))

    slow = {b1: Counting(200, "b", delay_s=SLOW_DELAY_S), b2: Counting(200, "b2", delay_s=0.0)}
    async with trio.open_nursery() as servers:
        ports = {h: await servers.start(serve_counting, h, slow[h]) for h in (b1, b2)}
        slow[b2].delay_s = SLOW_DELAY_S
        await _run(tmp_path, topology, b1, b2, ports, slow)
        servers.cancel_scope.cancel()


async def _run(
    tmp_path: Path,
    topology: object,
    b1: str,
    b2: str,
    ports: dict[str, int],
    slow: dict[str, Counting],
) -> None:
    def patch(site: str, text: str) -> str:
        return _both_replicas(site, text, b1, b2, ports[b1])

    async with open_overlay(tmp_path, topology, patch=patch, services=True) as ov:  # type: ignore[arg-type]
        await _add_second_replica(ov, ports[b2])
        links = await ov.wait("a", "/links", lambda doc: _replicas_up(doc) == 2)
        assert [r["address"] for r in links["b"]["replicas"]] == [
            f"{b1}:{EW_PORT}",
            f"{b2}:{EW_PORT}",
        ]
        await ov.wait("a", "/routes", lambda doc: routes_of(doc, AUTHORITY) == ["b"])

        served: list[str] = []
        failures: list[str] = []
        route_losses: list[object] = []
        phase = {"name": "before"}
        by_phase: dict[str, set[str]] = {
            name: set() for name in ("before", "killing", "down", "restarting", "after")
        }
        done = trio.Event()

        async def caller(i: int, authority: str) -> None:
            for _ in range(MAX_REQUESTS):
                if done.is_set():
                    return
                try:
                    replica = await _call(ov, authority)
                except (AssertionError, OSError) as exc:
                    failures.append(f"caller {i} {authority} ({phase['name']}): {exc!r}")
                    continue
                if authority == AUTHORITY:
                    served.append(replica)
                    by_phase[phase["name"]].add(replica)

        async def watch_routes() -> None:
            while not done.is_set():
                doc = await ov.get("a", "/routes")
                if routes_of(doc, AUTHORITY) != ["b"]:
                    route_losses.append(doc)
                await trio.sleep(0.05)

        async def count_at_least(n: int) -> None:
            while len(served) < n:  # the callers append; bounded by fail_after
                # Stop early once the outcome is known: failing requests count nothing.
                assert len(failures) < 20 and len(route_losses) < 5, (failures, route_losses)
                await trio.sleep(0.05)

        with trio.fail_after(WITHIN_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch_routes)
                for i in range(WORKERS):
                    nursery.start_soon(caller, i, AUTHORITY)
                    nursery.start_soon(caller, i, SLOW)
                await count_at_least(60)
                while slow[b1].in_flight == 0:  # noqa: ASYNC110 -- bounded by fail_after
                    await trio.sleep(0.01)
                phase["name"] = "killing"
                await ov.kill("b")  # SIGKILL by PID: no goodbye, the links just break
                await ov.wait("a", "/links", lambda doc: _replicas_up(doc) == 1)
                phase["name"] = "down"
                await count_at_least(len(served) + 100)
                phase["name"] = "restarting"
                await ov.start("b")
                await ov.wait("a", "/links", lambda doc: _replicas_up(doc) == 2)
                phase["name"] = "after"
                mark = len(served)
                while "b" not in served[mark:] and len(served) < mark + 2000:  # noqa: ASYNC110
                    await trio.sleep(0.05)
                await count_at_least(len(served) + 40)
                done.set()

        assert failures == []
        # The slow requests held at b1's endpoint when it died were answered by b2's.
        assert slow[b1].seen and len(slow[b2].seen) > 0
        assert route_losses == []
        assert by_phase["before"] == {"b", "b2"}  # spread over both replicas
        assert by_phase["down"] == {"b2"}  # the site stays up on its other replica
        assert "b" in by_phase["after"] and "b2" in by_phase["after"]
        # While one replica is down the site stays up: no failover, no 503.
        assert _replicas_up(await ov.get("a", "/links")) == 2
