"""Routes follow the site that owns the address: three real gateways.

Site ``a`` owns ``whoami.default`` and defines a 90/10 canary between itself and site ``b``
(which runs ``whoami`` too, without routes).  A caller entering at the third site ``c`` --
which has no route of its own -- follows a's split (checked against an exact binomial bound:
without the owner's routes every request would go to ``a``, first in c's failover order).
Then ``a`` reloads its route to a full shift to ``b``, and ``c`` follows without a restart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from gateway.demo.topology import DemoService
from tests.e2e.clients import h1_request
from tests.e2e.harness import Overlay, make_topology, open_overlay
from tests.e2e.test_routes import HTTP_PORT, _reload, binomial_bounds

AUTHORITY = "whoami.default.isthmus"
REQUESTS = 400  # bounded in count (at most WORKERS at once)
WORKERS = 4

CANARY = """
[[routes]]
address = "whoami.default"
name = "canary"
backends = [
  { service = "whoami.default", site = "a", weight = 90 },
  { service = "whoami.default", site = "b", weight = 10 },
]
response_headers = { add = { "x-route" = "canary" } }
"""

SHIFTED = """
[[routes]]
address = "whoami.default"
name = "all-to-b"
backends = [{ service = "whoami.default", site = "b" }]
response_headers = { add = { "x-route" = "all-to-b" } }
"""


async def _get(ov: Overlay) -> Any:
    return await h1_request(
        str(ov.built["c"].site.address), HTTP_PORT, authority=AUTHORITY, request_timeout_s=20
    )


def _followed(doc: Any, name: str) -> bool:
    entry = doc.get("imported_routes", {}).get("whoami.default")
    return entry is not None and entry["site"] == "a" and entry["routes"] == [f"a/{name}"]


async def test_a_third_site_follows_the_owners_canary_and_its_reload(tmp_path: Path) -> None:
    whoami = (DemoService("whoami", "http", 18080),)
    topology = make_topology(["a", "b", "c"], {"a": whoami, "b": whoami})

    def patch(site: str, text: str) -> str:
        return text + CANARY if site == "a" else text

    async with open_overlay(tmp_path, topology, patch=patch, services=True) as ov:
        await ov.wait("c", "/routes", lambda d: _followed(d, "canary"))
        await ov.wait(
            "c", "/routes", lambda d: sorted(d["routes"].get(AUTHORITY) or []) == ["a", "b"]
        )

        pid_c = ov.children["c"].process.pid  # c is never restarted or reloaded
        sites: list[str] = []
        claimed = 0

        async def worker() -> None:
            nonlocal claimed
            while claimed < REQUESTS:
                claimed += 1
                reply = await _get(ov)
                assert reply.status == 200, (reply.status, reply.body[:200])
                assert reply.headers.get("x-route") == "canary"
                sites.append(reply.json()["site"])

        async with trio.open_nursery() as nursery:
            for _ in range(WORKERS):
                nursery.start_soon(worker)
        assert len(sites) == REQUESTS and set(sites) <= {"a", "b"}
        lo, hi = binomial_bounds(REQUESTS, 0.1)
        assert lo <= sites.count("b") <= hi, sites.count("b")

        config = ov.built["a"].config_path
        config.write_text(config.read_text("utf-8").replace(CANARY, SHIFTED), "utf-8")
        status, doc = await trio.to_thread.run_sync(_reload, ov.url("a"))
        assert status == 200 and "routes" in doc["changes"], doc
        await ov.wait("c", "/routes", lambda d: _followed(d, "all-to-b"))
        for _ in range(20):
            reply = await _get(ov)
            assert reply.status == 200 and reply.json()["site"] == "b"
            assert reply.headers.get("x-route") == "all-to-b"
        assert ov.children["c"].process.pid == pid_c and ov.children["c"].process.poll() is None
