"""Fleet-wide settings pushed from Consul KV to three real gateway processes.

The Consul-API test server runs in this process (with ACLs on); three sites run ``isthmus
run`` with ``[fleet] source = "consul"`` and no ``[[policies]]`` of their own, so a call from
another site is refused (403) until the fleet document allows it.  Every step goes through
the ``isthmus`` CLI and is checked by behaviour (a cross-site request's status) and by each
site's ``/fleet`` view.  Waits are hang guards only; nothing asserts how fast.
"""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import trio

from gateway.demo.topology import DemoService
from tests.consul_api.server import ConsulApiServer, open_consul_api_server
from tests.e2e.clients import h1_request
from tests.e2e.harness import Overlay, make_topology, open_overlay

SITES = ("a", "b", "c")
TOKEN = "fleet-e2e-token"
WITHIN_S = 30.0  # a hang guard per step

ALLOW_ALL = """
[[resources]]
kind = "policies"
name = "peers-may-call"
targets = ["*"]
[resources.spec]
allow_sites = ["*"]
"""
ONLY_B = ALLOW_ALL.replace('targets = ["*"]', 'targets = ["b"]')
# Valid as a document, invalid at every site: no site has a peer named "nowhere".
BAD_FOR_SITES = (
    ONLY_B
    + '\n[[resources]]\nkind = "exports"\nname = "x"\n[resources.spec]\npeers = ["nowhere"]\n'
)

# A route for every site: all of whoami's traffic to site c (a canary at 100 %).
SHIFT_TO_C = """
[[resources]]
kind = "routes"
name = "whoami-to-c"
targets = ["*"]
[resources.spec]
address = "whoami.default"
backends = [{ service = "whoami.default", site = "c", weight = 100 }]
"""

NOWHERE_PEER = """
[[peers]]
name = "nowhere"
address = "127.0.0.1"
port = 9
spiffe_id = "spiffe://nowhere.e2e.test/isthmus/gateway/nowhere"
dial = false
"""


def _patch(url: str) -> Any:
    def patch(site: str, text: str) -> str:
        demo_policy = '[[policies]]\nallow_sites = ["*"]'
        assert demo_policy in text
        text = text.replace(demo_policy, "")
        return text + (
            f'\n[[sources]]\nkind = "consul"\nname = "consul"\naddress = "{url}"\n'
            f'token = "{TOKEN}"\nservices = ["whoami-none"]\n'
            '\n[fleet]\nsource = "consul"\nprefix = "isthmus/fleet"\n'
        )

    return patch


def _text(url: str) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=10) as response:
        return str(response.read().decode())


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "gateway.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: _cli(*args))


async def apply(consul: ConsulApiServer, path: Path, text: str) -> str:
    await trio.Path(path).write_text(text, "utf-8")
    done = await cli("apply", str(path), "--consul", consul.url, "--token-file", _token(path))
    assert done.returncode == 0, done.stderr
    return done.stdout.split()[2]  # "applied version <v> (was ...)"


def _token(near: Path) -> str:
    path = near.parent / "token"
    path.write_text(TOKEN + "\n", "utf-8")
    return str(path)


async def status_from(ov: Overlay, caller: str, target: str) -> int:
    site = ov.built[caller].site
    reply = await h1_request(
        str(site.address),
        ov.topology.http_port,
        authority=f"whoami.default.{target}.isthmus",
        request_timeout_s=20,
    )
    return reply.status


async def whoami_site(ov: Overlay, caller: str) -> str:
    """The site whose endpoint answered ``whoami.default`` (unpinned) called at ``caller``."""
    reply = await h1_request(
        str(ov.built[caller].site.address),
        ov.topology.http_port,
        authority="whoami.default.isthmus",
        request_timeout_s=20,
    )
    assert reply.status == 200, (caller, reply.status, reply.body)
    return str(reply.json()["site"])


async def all_run(ov: Overlay, version: str) -> None:
    for site in SITES:
        await ov.wait(site, "/fleet", lambda d: d["version"] == version, within_s=WITHIN_S)


async def test_fleet_apply_reject_rollback_catch_up(tmp_path: Path) -> None:
    services = {s: (DemoService("whoami", "http", 18080),) for s in SITES}
    topology = make_topology(list(SITES), services)
    async with (
        open_consul_api_server(acl_token=TOKEN) as consul,
        open_overlay(tmp_path, topology, patch=_patch(consul.url), services=True) as ov,
    ):
        doc = tmp_path / "fleet.toml"
        for site in SITES:  # the key is absent: every site runs the empty document
            await ov.wait(site, "/fleet", lambda d: d["state"] == "current")
        for site in SITES:  # every site routes whoami to the other two
            await ov.wait(
                site,
                "/routes",
                lambda d: len(d["routes"].get("whoami.default.isthmus", [])) == 3,
            )
        assert await status_from(ov, "a", "b") == 403

        # 1. One apply: every site runs it, and cross-site calls are allowed everywhere.
        v1 = await apply(consul, doc, ALLOW_ALL)
        await all_run(ov, v1)
        for caller, target in (("a", "b"), ("b", "c"), ("c", "a")):
            assert await status_from(ov, caller, target) == 200, (caller, target)
        metrics = await trio.to_thread.run_sync(_text, ov.url("b") + "/metrics")
        assert f'isthmus_fleet_version_info{{version="{v1}"}} 1' in metrics

        # A traffic shift applied once: every site sends whoami (unpinned) to site c, whose
        # endpoint names itself in its answer.  Without the route a and b answer locally.
        assert (await whoami_site(ov, "a")) == "a"
        v_shift = await apply(consul, doc, ALLOW_ALL + SHIFT_TO_C)
        await all_run(ov, v_shift)
        for caller in SITES:
            assert (await whoami_site(ov, caller)) == "c", caller

        # 2. Targets: the policy for b only.  c refuses again, b still allows.
        v2 = await apply(consul, doc, ONLY_B)
        await all_run(ov, v2)
        assert await status_from(ov, "a", "c") == 403
        assert await status_from(ov, "a", "b") == 200

        # 3. Invalid at every site: rejected everywhere, v2 keeps serving.
        v3 = await apply(consul, doc, BAD_FOR_SITES)
        for site in SITES:
            view = await ov.wait(
                site, "/fleet", lambda d: d["state"] == "rejected", within_s=WITHIN_S
            )
            assert view["version"] == v2 and view["rejected"]["version"] == v3
            paths = [p["path"] for p in view["rejected"]["problems"]]
            assert paths == ["fleet.resources[0].spec.peers[0]"], paths
        assert await status_from(ov, "a", "b") == 200
        assert await status_from(ov, "a", "c") == 403
        urls = [ov.url(s) for s in SITES]
        fleet = await cli(
            "status",
            "--fleet",
            *urls,
            "--consul",
            consul.url,
            "--token-file",
            _token(doc),
            "--json",
        )
        assert fleet.returncode == 1, (fleet.returncode, fleet.stdout, fleet.stderr)
        report = json.loads(fleet.stdout)
        assert report["expected"] == v3
        assert {r["site"]: r["state"] for r in report["sites"]} == {
            "a": "rejected",
            "b": "rejected",
            "c": "rejected",
        }
        assert all("no peer is named 'nowhere'" in r["why"] for r in report["sites"])

        # Site a changes its own file to let v3 in (it gets the peer v3 names): its file
        # reload applies v3 there; b and c still reject it.
        config_a = ov.built["a"].config_path
        await trio.Path(config_a).write_text(
            await trio.Path(config_a).read_text("utf-8") + NOWHERE_PEER, "utf-8"
        )
        reloaded = await cli("reload", str(config_a))
        assert reloaded.returncode == 0, reloaded.stderr
        view = await ov.get("a", "/fleet")
        assert view["version"] == v3 and view["state"] == "current", view
        assert (await ov.get("b", "/fleet"))["state"] == "rejected"

        # A document that is invalid on its own never reaches the authority.
        doc.write_text(ALLOW_ALL.replace("allow_sites", "allow_sitez"), "utf-8")
        refused = await cli("apply", str(doc), "--consul", consul.url, "--token-file", _token(doc))
        assert refused.returncode == 2 and "resources[0].spec.allow_sitez" in refused.stderr
        # An apply without the ACL token is refused by the authority.
        doc.write_text(ALLOW_ALL, "utf-8")
        anonymous = await cli("apply", str(doc), "--consul", consul.url)
        assert anonymous.returncode == 3 and "ACL" in anonymous.stderr

        # 4. Rollback to v1: every site runs it, c allows again.
        back = await cli("rollback", v1, "--consul", consul.url, "--token-file", _token(doc))
        assert back.returncode == 0, back.stderr
        await all_run(ov, v1)
        assert await status_from(ov, "a", "c") == 200
        fleet = await cli(
            "status", "--fleet", *urls, "--consul", consul.url, "--token-file", _token(doc)
        )
        assert fleet.returncode == 0, fleet.stdout

        # 5. A site cut off from the authority catches up when it answers again.
        await consul.go_away()
        for site in SITES:
            await ov.wait(site, "/fleet", lambda d: d["state"] == "unreachable", within_s=WITHIN_S)
        assert await status_from(ov, "a", "c") == 200  # v1 keeps serving meanwhile
        from gateway.fleet.document import load_document_text

        only_b = load_document_text(ONLY_B)
        consul.kv.put("isthmus/fleet/current", only_b.canonical_json().encode())
        await consul.come_back()
        await all_run(ov, only_b.version)
        assert await status_from(ov, "a", "c") == 403

        # 6. A restarted site starts on the current version (read before it serves).
        await ov.stop("c")
        await ov.start("c")
        view = await ov.get("c", "/fleet")
        assert view["version"] == only_b.version and view["state"] in ("current", "pending")
