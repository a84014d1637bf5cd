"""``[[routes]]`` on real gateway processes: a 90/10 canary between this site and a pinned
peer site, then a live reload to new routes (a direct response, a rate limit, all traffic
to the peer).

The split is random in the gateway (``random.random``), so the count that went to the peer is
checked against a binomial bound: the test fails by chance with probability below 1e-6.
"""

from __future__ import annotations

import json
import math
import urllib.request
from pathlib import Path
from typing import Any

import trio

from gateway.demo.topology import DemoService
from tests.e2e.clients import h1_request
from tests.e2e.harness import Overlay, make_topology, open_overlay, routes_of

HTTP_PORT = 15080
AUTHORITY = "whoami.default.isthmus"
REQUESTS = 400  # bounded in count (each a new connection, at most WORKERS at once)
WORKERS = 4
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

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
name = "maintenance"
match = { path = { exact = "/maintenance" } }
direct_response = { status = 503, body = "down for maintenance" }

[[routes]]
address = "whoami.default"
name = "limited"
match = { headers = [{ name = "x-limited", present = true }] }
rate_limit = { requests_per_s = 0.001, burst = 1, key = "route" }

[[routes]]
address = "whoami.default"
name = "all-to-b"
backends = [{ service = "whoami.default", site = "b" }]
"""


def binomial_bounds(n: int, p: float, alpha: float = 1e-6) -> tuple[int, int]:
    """The widest ``[lo, hi]`` with P(X < lo) + P(X > hi) <= alpha for X ~ Binomial(n, p)."""
    pmf = [math.comb(n, k) * p**k * (1 - p) ** (n - k) for k in range(n + 1)]
    lo, tail = 0, 0.0
    while tail + pmf[lo] <= alpha / 2:
        tail += pmf[lo]
        lo += 1
    hi, tail = n, 0.0
    while tail + pmf[hi] <= alpha / 2:
        tail += pmf[hi]
        hi -= 1
    return lo, hi


def test_the_binomial_bound_is_what_it_says() -> None:
    lo, hi = binomial_bounds(REQUESTS, 0.1)
    assert 0 < lo < 40 < hi < 80  # excludes "never the peer" and "half to the peer"


async def _get(ov: Overlay, path: str = "/", headers: dict[str, str] | None = None) -> Any:
    return await h1_request(
        str(ov.built["a"].site.address),
        HTTP_PORT,
        authority=AUTHORITY,
        path=path,
        headers=headers,
        request_timeout_s=20,
    )


def _reload(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url + "/config/reload", data=b"", method="POST")
    try:
        with _OPENER.open(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_canary_split_across_sites_then_a_live_reload(tmp_path: Path) -> None:
    whoami = (DemoService("whoami", "http", 18080),)
    topology = make_topology(["a", "b"], {"a": whoami, "b": whoami})

    def patch(site: str, text: str) -> str:
        return text + CANARY if site == "a" else text

    async with open_overlay(tmp_path, topology, patch=patch, services=True) as ov:
        await ov.wait("a", "/routes", lambda d: len(routes_of(d, AUTHORITY) or []) == 2)

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

        maintenance = await _get(ov, "/maintenance")
        assert (maintenance.status, maintenance.body) == (503, b"down for maintenance")
        first = await _get(ov, headers={"x-limited": "1"})
        second = await _get(ov, headers={"x-limited": "1"})
        assert first.status == 200 and second.status == 429
        assert int(second.headers["retry-after"]) >= 1
        for _ in range(20):
            reply = await _get(ov)
            assert reply.status == 200 and reply.json()["site"] == "b"
