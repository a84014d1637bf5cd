"""``isthmus explain --from SITE`` against three real gateway processes (``a``, ``b``, ``c``).

``c`` runs ``api``; ``a`` and ``c`` run ``web``.  Only ``b`` has the route ``only-at-b``
(``shop.default`` -> ``api.default`` at ``c``), and only ``b`` lets ``a`` ask for its trace
(``[debug] explain_peers``).  Asked at ``a``, ``--from b`` gives ``b``'s trace: the route that
exists only there, ``b``'s view of ``web`` (``a`` is a peer there, reached over a link), and
``c``'s verdict asked by ``b``.  An unknown site, a site that refuses and a site whose link is
down each give a clear error and their exit code -- and nothing is ever sent: no gateway's
request counter moves, and no credential given with ``-H`` is printed or logged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from gateway.demo.topology import DemoService
from tests.e2e.harness import Overlay, make_topology, open_overlay, routes_of
from tests.e2e.test_observe import scrape, value
from tests.e2e.test_status_explain import cli

API = DemoService("api", "http", 18193)
WEB = DemoService("web", "http", 18194)
SECRET = "Bearer s3cr3t-0001"
ONLY_AT_B = """
[debug]
explain_peers = ["a"]

[[routes]]
name = "only-at-b"
address = "shop.default"
backends = [{ service = "api.default", site = "c", weight = 1 }]
"""


def _patch(site: str, text: str) -> str:
    return text + ONLY_AT_B if site == "b" else text


async def explain(ov: Overlay, *args: str) -> tuple[int, str, str]:
    return await cli("explain", *args, "--admin", ov.url("a"), "-H", f"authorization: {SECRET}")


async def explain_json(ov: Overlay, url: str, *args: str) -> tuple[int, dict[str, Any]]:
    rc, out, err = await explain(ov, url, "--json", *args)
    assert rc in (0, 1), (rc, err)
    assert SECRET not in out and "s3cr3t" not in err
    return rc, json.loads(out)


async def _converged(ov: Overlay) -> None:
    for here in ("a", "b"):
        await ov.wait(here, "/routes", lambda d: routes_of(d, "api.default.isthmus") == ["c"])
    await ov.wait("b", "/routes", lambda d: routes_of(d, "web.default.isthmus") == ["a", "c"])


async def test_explain_from_a_peer_site_gives_that_sites_trace(tmp_path: Path) -> None:
    topology = make_topology(["a", "b", "c"], {"a": (WEB,), "c": (API, WEB)})
    async with open_overlay(tmp_path, topology, services=True, patch=_patch) as ov:
        await _converged(ov)
        before = {s: await scrape(ov, s) for s in ("a", "b", "c")}
        c_address = str(ov.built["c"].site.address)

        # The route exists only at b: from b the request is routed to c ...
        rc, trace = await explain_json(ov, "http://shop.default.isthmus/x", "--from", "b")
        assert rc == 0, trace
        assert trace["computed_by"] == "b" and trace["asked_through"] == "a"
        assert trace["route"].startswith("only-at-b"), trace["route"]
        [cand] = trace["candidates"]
        assert (cand["site"], cand["decision"], cand["link"]) == ("c", "chosen", "up")
        assert cand["policy"] == "allowed"  # c's verdict, asked by b
        assert cand["endpoint"]["address"] == c_address and cand["endpoint"]["port"] == API.port
        assert trace["site"] == "c" and trace["sent"] is False
        # ... from here (a) there is no such route, and no such service.
        rc, here = await explain_json(ov, "http://shop.default.isthmus/x")
        assert rc == 1 and here["status"] == 404 and here["computed_by"] == "a"
        assert here["route"] == "default"

        # b's own view of web: a is a peer there (over a link), the local site here.
        rc, trace = await explain_json(ov, "http://web.default.isthmus/", "--from", "b")
        assert rc == 0 and [c["site"] for c in trace["candidates"]] == ["a", "c"]
        first = trace["candidates"][0]
        assert (first["decision"], first["link"], first["policy"]) == ("chosen", "up", "allowed")
        rc, here = await explain_json(ov, "http://web.default.isthmus/")
        assert rc == 0 and here["candidates"][0]["link"] == "local"

        # The readable form says which site computed the trace.
        rc, out, err = await explain(ov, "http://shop.default.isthmus/", "--from", "b")
        assert rc == 0, err
        assert "from     site b (its gateway's trace, asked through a)" in out
        assert "only-at-b" in out and "nothing was sent" in out and "s3cr3t" not in out + err

        # An unknown site: the known ones are listed (exit 2).
        rc, _, err = await explain(ov, "http://api.default.isthmus/", "--from", "zz")
        assert rc == 2 and "known sites: a (this site), b, c" in err, err
        # c does not let a have its trace: refused, and said so (exit 2).
        rc, _, err = await explain(ov, "http://api.default.isthmus/", "--from", "c")
        assert rc == 2 and "refuses to explain" in err and "explain_peers" in err, err

        # Nothing was sent: no gateway counted a request, and no credential was logged.
        for s in ("a", "b", "c"):
            after = await scrape(ov, s)
            assert value(after, "isthmus_requests_total") == value(
                before[s], "isthmus_requests_total"
            ), s
            assert "s3cr3t" not in ov.log(s)

        # b down: a clear error, the "unreachable" exit code (3).
        await ov.kill("b")
        await ov.wait("a", "/links", lambda d: d.get("b", {}).get("up") is False, within_s=30)
        rc, _, err = await explain(ov, "http://shop.default.isthmus/", "--from", "b")
        assert rc == 3 and "the link to it is down" in err, (rc, err)
