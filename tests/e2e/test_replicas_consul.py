"""A site's replicas discovered through Consul, on real gateway processes.

The Consul-API test server runs in this process (ACLs on).  Site ``b`` runs two gateways
(``isthmus run``, same site name and SPIFFE ID, own SVIDs), each registering itself as
``isthmus-gateway`` with a TTL check (``[consul_gateways] register = true``).  Site ``a`` has
no address for ``b`` at all: ``[[peers]] discover = "consul"``.  a links to both replicas and
reaches b's service through both; then one replica stops (SIGTERM: it deregisters) and a
keeps working through the other; it comes back, and is then killed (SIGKILL: no goodbye,
its TTL check runs out) and a again keeps working through the other, the dead replica gone
from a's replica list.  Every wait is bounded (hang guards only).
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.demo.runner import service_argv, start_child
from gateway.demo.topology import BuiltSite, DemoService, gateway_config_text
from overlay.identity.ca import issue_svid
from tests.consul_api.server import ConsulApiServer, open_consul_api_server
from tests.e2e.clients import h1_request
from tests.e2e.harness import Overlay, both_modes, make_topology, open_overlay, routes_of

# Also with two workers per site: the supervisor finds the replicas in Consul and passes
# them on, and every worker links to them.
pytestmark = pytest.mark.usefixtures("both_modes")
__all__ = ["both_modes"]  # the fixture, imported for the mark

HTTP_PORT = 15080
EW_PORT = 15443
WHOAMI_PORT = 18180
AUTHORITY = "whoami.default.isthmus"
TOKEN = "e2e-consul-replicas-token"
TTL_S = 2
WITHIN_S = 60.0  # hang guard per wait (TTL_S is 2 s)


def _consul(url: str) -> str:
    return (
        f'\n[[sources]]\nkind = "consul"\nname = "consul"\naddress = "{url}"\n'
        f'token = "{TOKEN}"\nservices = ["none-such"]\n'
    )


def _patch(url: str, b1: str) -> Any:
    def patch(site: str, text: str) -> str:
        if site == "a":
            one = f'address = "{b1}"\nport = {EW_PORT}\n'
            assert text.count(one) == 1, text
            return text.replace(one, 'discover = "consul"\n') + _consul(url)
        return text + _consul(url) + f"\n[consul_gateways]\nregister = true\nttl_s = {TTL_S}\n"

    return patch


async def _add_second_replica(ov: Overlay, url: str) -> str:
    """b's second gateway on the next loopback address, own SVID (same SPIFFE ID), own whoami
    endpoint (it says "b2"); registered in Consul like the first."""
    b = ov.built["b"]
    address = ipaddress.IPv4Address(int(b.site.address) + 1)
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
    text = _patch(url, "")("b", text)
    config = directory / "gateway.toml"
    config.write_text(text, "utf-8")
    ov.built["b2"] = BuiltSite(site, config, directory)
    argv = service_argv("http", str(address), WHOAMI_PORT, "b2")
    ov.children["b2/whoami"] = await start_child("b2/whoami", argv, directory / "whoami.log")
    await ov.start("b2")
    return str(address)


async def _call(ov: Overlay) -> str:
    host = str(ov.built["a"].site.address)
    reply = await h1_request(host, HTTP_PORT, authority=AUTHORITY, request_timeout_s=20)
    assert reply.status == 200, (reply.status, reply.body[:300])
    return str(reply.json()["site"])


def _replicas(doc: dict[str, Any]) -> list[tuple[str, bool]]:
    return sorted((r["address"], r["up"]) for r in doc.get("b", {}).get("replicas", []))


def _registered(consul: ConsulApiServer) -> list[str]:
    return sorted(s.address for s in consul.store.services.values() if s.name == "isthmus-gateway")


async def _served_by(ov: Overlay, want: set[str], tries: int = 400) -> set[str]:
    """Call b's service until every replica in ``want`` answered (bounded); who answered.

    Paced, not a burst: a replica whose link was replaced moments ago (discovery taking over
    the configured address) is tried last until its PING deadline passes, so a burst of calls
    can all land on the other one; spread over up to ~40 s they reach both."""
    seen: set[str] = set()
    for _ in range(tries):
        seen.add(await _call(ov))
        if want <= seen:
            break
        if want:
            await trio.sleep(0.1)
    return seen


async def test_replicas_found_in_consul_come_and_go(tmp_path: Path) -> None:
    topology = make_topology(["a", "b"], {"b": (DemoService("whoami", "http", WHOAMI_PORT),)})
    b1 = str(topology.sites[1].address)
    async with open_consul_api_server(acl_token=TOKEN) as consul:
        patch = _patch(consul.url, b1)
        async with open_overlay(tmp_path, topology, patch=patch, services=True) as ov:
            b2 = await _add_second_replica(ov, consul.url)
            both = [(f"{b1}:{EW_PORT}", True), (f"{b2}:{EW_PORT}", True)]
            await ov.wait("a", "/links", lambda d: _replicas(d) == both, within_s=WITHIN_S)
            assert _registered(consul) == [b1, b2]
            await ov.wait("a", "/routes", lambda d: routes_of(d, AUTHORITY) == ["b"])
            assert await _served_by(ov, {"b", "b2"}) == {"b", "b2"}

            # b stops (SIGTERM): it deregisters; a drops the replica and keeps working.
            await ov.stop("b")
            assert _registered(consul) == [b2]
            only_b2 = [(f"{b2}:{EW_PORT}", True)]
            await ov.wait("a", "/links", lambda d: _replicas(d) == only_b2, within_s=WITHIN_S)
            assert await _served_by(ov, set(), tries=20) == {"b2"}

            # b comes back: registered again, linked again.
            await ov.start("b")
            await ov.wait("a", "/links", lambda d: _replicas(d) == both, within_s=WITHIN_S)
            assert await _served_by(ov, {"b", "b2"}) == {"b", "b2"}

            # b is killed (no deregistration): its TTL check runs out, a drops it.
            await ov.kill("b")
            await ov.wait("a", "/links", lambda d: _replicas(d) == only_b2, within_s=WITHIN_S)
            check = consul.store.checks[
                (consul.node_name, f"service:isthmus-gateway-b-{b1}-{EW_PORT}")
            ]
            assert (check.status, check.output) == ("critical", "TTL expired")
            assert await _served_by(ov, set(), tries=20) == {"b2"}
            assert TOKEN not in ov.log("a") and TOKEN not in ov.log("b2")
