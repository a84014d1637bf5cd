"""``[[service_traffic]]`` changes applied without restart, on real gateway processes.

Under steady load a service is reloaded from round robin to a hash ring by header: every
caller's new requests follow the ring (one endpoint per user) with no failed request, and a
keep-alive connection opened before the reload keeps working after it.  A health check's
interval is changed by a reload and a dead endpoint is marked unhealthy in ``/catalog`` by the
same process; removing the check clears the mark.
"""

from __future__ import annotations

import http.client
import json
import socket
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio

from gateway.demo.runner import service_argv, start_child
from gateway.demo.topology import DemoService
from tests.e2e.clients import h1_request
from tests.e2e.harness import Overlay, make_topology, open_overlay

HTTP_PORT = 15080
SOLO_PORT, BLUE_PORT, DEAD_PORT = 18080, 18081, 18089
AUTHORITY = "whoami.default.isthmus"
WORKERS = 4
MAX_REQUESTS = 2000  # per worker: the loop is bounded in count...
LOAD_WITHIN_S = 120.0  # ...and in time (a hang guard, never a speed assertion)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))
RING = '\n[[service_traffic]]\nservice = "whoami"\nlb = "ring_hash"\nhash_header = "x-user"\n'


def _topology() -> Any:
    return make_topology(["solo"], {"solo": (DemoService("whoami", "http", SOLO_PORT),)})


def _with_endpoint(port: int) -> Callable[[str, str], str]:
    """A patch adding a second static endpoint of whoami (on the site's address) at ``port``."""

    def patch(_site: str, text: str) -> str:
        head, tail = text.split("\n[[exports]]", 1)
        address = head.split("\n[[sources.endpoints]]", 1)[1].split('address = "', 1)[1]
        address = address.split('"', 1)[0]
        extra = (
            '\n[[sources.endpoints]]\nservice = "whoami"\nnamespace = "default"\n'
            f'address = "{address}"\nport = {port}\nprotocol = "http1"\n'
        )
        return head + extra + "\n[[exports]]" + tail

    return patch


def _post(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with _OPENER.open(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def _reload(ov: Overlay) -> Any:
    status, doc = await trio.to_thread.run_sync(_post, ov.url("solo") + "/config/reload")
    assert status == 200 and doc["result"] == "applied", doc
    return doc


def _addr(ov: Overlay) -> str:
    return str(ov.built["solo"].site.address)


async def _site_of(ov: Overlay, user: str) -> str:
    reply = await h1_request(
        _addr(ov), HTTP_PORT, authority=AUTHORITY, headers={"x-user": user}, request_timeout_s=20
    )
    assert reply.status == 200, (reply.status, reply.body[:300])
    return str(reply.json()["site"])


def _open_close(host: str, port: int) -> None:
    with socket.create_connection((host, port), timeout=2):
        pass


async def _until_serving(host: str, port: int) -> None:
    for _ in range(300):  # hang guard: 30 s
        try:
            await trio.to_thread.run_sync(_open_close, host, port)
            return
        except OSError:
            await trio.sleep(0.1)
    raise AssertionError(f"nothing listens on {host}:{port}")


def _keepalive_get(conn: http.client.HTTPConnection) -> int:
    conn.request("GET", "/", headers={"Host": AUTHORITY})
    response = conn.getresponse()
    response.read()
    return response.status


async def test_round_robin_to_hash_ring_under_load_with_no_failed_request(tmp_path: Path) -> None:
    async with open_overlay(
        tmp_path, _topology(), services=True, patch=_with_endpoint(BLUE_PORT)
    ) as ov:
        built = ov.built["solo"]
        argv = service_argv("http", _addr(ov), BLUE_PORT, "blue")
        ov.children["solo/blue"] = await start_child("solo/blue", argv, built.directory / "b.log")
        pid = ov.children["solo"].process.pid
        live = http.client.HTTPConnection(_addr(ov), HTTP_PORT, timeout=20)
        # (phase, site) per worker; phase "after" only for requests started after the reload.
        seen: list[list[tuple[str, str]]] = [[] for _ in range(WORKERS)]
        failures: list[str] = []
        reloaded = trio.Event()
        warmed_up = trio.Event()

        async def worker(i: int) -> None:
            after = 0
            for _ in range(MAX_REQUESTS):
                phase = "after" if reloaded.is_set() else "before"
                try:
                    site = await _site_of(ov, f"user-{i}")
                except (AssertionError, OSError) as exc:
                    failures.append(f"worker {i}: {exc!r}")
                    continue
                seen[i].append((phase, site))
                if sum(len(s) for s in seen) >= 40:
                    warmed_up.set()
                if phase == "after":
                    after += 1
                    if after >= 20:
                        return

        try:
            await _until_serving(_addr(ov), BLUE_PORT)
            assert await trio.to_thread.run_sync(_keepalive_get, live) == 200
            with trio.fail_after(LOAD_WITHIN_S):
                async with trio.open_nursery() as nursery:
                    for i in range(WORKERS):
                        nursery.start_soon(worker, i)
                    await warmed_up.wait()
                    built.config_path.write_text(built.config_path.read_text("utf-8") + RING)
                    doc = await _reload(ov)
                    reloaded.set()
            assert doc["changes"] == ["service_traffic"]
            # The connection opened before the reload still serves after it.
            assert await trio.to_thread.run_sync(_keepalive_get, live) == 200
        finally:
            live.close()
        assert failures == []
        before = [site for sites in seen for phase, site in sites if phase == "before"]
        assert {"solo", "blue"} <= set(before)  # round robin: both endpoints
        for i, sites in enumerate(seen):  # the ring: each user on one endpoint from now on
            after = {site for phase, site in sites if phase == "after"}
            assert len(after) == 1, (i, sites)
        # Different users spread over both endpoints (32 users: all on one is improbable).
        where = {u: await _site_of(ov, f"spread-{u}") for u in range(32)}
        assert set(where.values()) == {"solo", "blue"}
        assert {u: await _site_of(ov, f"spread-{u}") for u in range(32)} == where
        assert (
            ov.children["solo"].process.pid == pid
            and ov.children["solo"].process.returncode is None
        )
        log = ov.log("solo")
        assert (
            "changed: service_traffic (rule added: whoami.*; lb; outlier_detection; "
            "retries/breakers)" in log
        )


def _dead_entry(doc: Any) -> Any:
    (entry,) = [e for e in doc["endpoints"] if e["port"] == DEAD_PORT]
    return entry


def _checked(interval_s: float, timeout_s: float) -> str:
    """A rule checking whoami by TCP connect (outlier detection off, so only checks mark)."""
    return (
        '\n[[service_traffic]]\nservice = "whoami"\noutlier_detection = { enabled = false }\n'
        f'[service_traffic.health_check]\nkind = "tcp"\ninterval_s = {interval_s}\n'
        f"timeout_s = {timeout_s}\nunhealthy_threshold = 2\n"
    )


async def test_a_changed_health_check_marks_a_dead_endpoint_without_restart(
    tmp_path: Path,
) -> None:
    async with open_overlay(
        tmp_path, _topology(), services=True, patch=_with_endpoint(DEAD_PORT)
    ) as ov:
        built = ov.built["solo"]
        process = ov.children["solo"].process
        base = built.config_path.read_text("utf-8")
        # Checked once an hour: the first probe fails, one failure is not enough to mark it.
        built.config_path.write_text(base + _checked(3600.0, 2.0))
        doc = await _reload(ov)
        assert doc["changes"] == ["service_traffic"]
        for _ in range(5):  # the dead endpoint's connect fails over to solo: no failure
            assert await _site_of(ov, "anyone") == "solo"
        assert _dead_entry(await ov.get("solo", "/catalog"))["ejected"] is None
        # Every 0.1 s now: the checker restarts and the dead endpoint is marked.
        built.config_path.write_text(base + _checked(0.1, 0.1))
        doc = await _reload(ov)
        assert doc["changes"] == ["service_traffic"]
        catalog = await ov.wait("solo", "/catalog", lambda d: _dead_entry(d)["ejected"] is not None)
        dead = _dead_entry(catalog)
        # (the count goes on while the probes fail: 2 or more)
        assert dead["ejected"].startswith("health check: ")
        assert "failed probes in a row, last: connect failed" in dead["ejected"]
        assert dead["routable"] is False
        assert "health_check" in ov.log("solo").rsplit("config reloaded", 1)[1]
        # The check removed: the mark clears at once, still the same process.
        built.config_path.write_text(base)
        await _reload(ov)
        catalog = await ov.get("solo", "/catalog")
        assert _dead_entry(catalog)["ejected"] is None
        assert process.returncode is None
        assert "rule removed: whoami.*" in ov.log("solo")


def _fleet_patch(url: str) -> Callable[[str, str], str]:
    """The dead endpoint, and the fleet document read from the Consul-API test server."""

    def patch(site: str, text: str) -> str:
        return _with_endpoint(DEAD_PORT)(site, text) + (
            f'\n[[sources]]\nkind = "consul"\nname = "consul"\naddress = "{url}"\n'
            f'token = "{FLEET_TOKEN}"\nservices = ["whoami-none"]\n'
            '\n[fleet]\nsource = "consul"\nprefix = "isthmus/fleet"\n'
        )

    return patch


FLEET_TOKEN = "fleet-e2e-token"
FLEET_CHECK = """
[[resources]]
kind = "service_traffic"
name = "whoami-checked"
targets = ["*"]
[resources.spec]
service = "whoami"
outlier_detection = { enabled = false }
health_check = { kind = "tcp", interval_s = 0.1, timeout_s = 0.1, unhealthy_threshold = 2 }
"""
FLEET_NOTHING = """
[[resources]]
kind = "caller_headers"
name = "placeholder"
targets = ["*"]
[resources.spec]
service = "nothing-here"
enabled = false
"""


async def test_a_fleet_service_traffic_rule_applies_without_restart(tmp_path: Path) -> None:
    from tests.consul_api.server import open_consul_api_server
    from tests.e2e.test_fleet import apply

    async with (
        open_consul_api_server(acl_token=FLEET_TOKEN) as consul,
        open_overlay(tmp_path, _topology(), patch=_fleet_patch(consul.url), services=True) as ov,
    ):
        await ov.wait("solo", "/fleet", lambda d: d["state"] == "current")
        process = ov.children["solo"].process
        doc = tmp_path / "fleet.toml"
        # A new [[service_traffic]] rule with a health check, from the fleet: applied live.
        v1 = await apply(consul, doc, FLEET_CHECK)
        await ov.wait("solo", "/fleet", lambda d: d["version"] == v1 and d["state"] == "current")
        catalog = await ov.wait("solo", "/catalog", lambda d: _dead_entry(d)["ejected"] is not None)
        assert _dead_entry(catalog)["ejected"].startswith("health check:")
        assert await _site_of(ov, "anyone") == "solo"
        # The rule gone from the fleet: the checker stops and the mark clears.
        v2 = await apply(consul, doc, FLEET_NOTHING)
        await ov.wait("solo", "/fleet", lambda d: d["version"] == v2 and d["state"] == "current")
        assert _dead_entry(await ov.get("solo", "/catalog"))["ejected"] is None
        assert process.returncode is None
        assert "rule removed: whoami.*" in ov.log("solo")
