"""The fleet document from a control site, pushed over the links to three real gateways.

Site ``a`` is the authority (``[fleet] source = "site"``, ``authority_site = "a"``); ``b``
and ``c`` take its pushes.  No site has a ``[[policies]]`` of its own, so a call from another
site is refused (403) until the fleet document allows it.  ``isthmus apply`` talks to a's
fleet API over mTLS with a client SVID; only ``spiffe://a.e2e.test/ops/deployer`` may write.
Site c dials a through a TCP relay of this test (a does not dial c), so the test can cut c's
link to the authority while c keeps running.  Waits are hang guards only.
"""

from __future__ import annotations

import contextlib
import http.client
import ipaddress
import json
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import trio

from foundation.spiffe_id import SpiffeId
from gateway.demo.topology import BuiltSite, DemoService, gateway_config_text
from overlay.identity.ca import SvidPaths, issue_svid
from tests.e2e.clients import h1_request
from tests.e2e.harness import Overlay, make_topology, open_overlay, with_site

SITES = ("a", "b", "c")
WITHIN_S = 30.0  # a hang guard per step
WRITER = "spiffe://a.e2e.test/ops/deployer"

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
    ALLOW_ALL
    + '\n[[resources]]\nkind = "exports"\nname = "x"\n[resources.spec]\npeers = ["nowhere"]\n'
)


class Relay:
    """A TCP relay from c to a's east-west listener that the test can cut and restore."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.open = True
        self.scopes: set[trio.CancelScope] = set()
        self.port = 0

    async def serve(self, host: str, *, task_status: trio.TaskStatus[None]) -> None:
        listeners = await trio.open_tcp_listeners(0, host=host)
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(self._one, listeners)

    async def _one(self, down: trio.SocketStream) -> None:
        if not self.open:
            await down.aclose()
            return
        with trio.CancelScope() as scope:
            self.scopes.add(scope)
            try:
                up = await trio.open_tcp_stream(*self.target)
                async with down, up, trio.open_nursery() as nursery:
                    nursery.start_soon(self._copy, down, up)
                    nursery.start_soon(self._copy, up, down)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                pass
            finally:
                self.scopes.discard(scope)

    @staticmethod
    async def _copy(src: trio.SocketStream, dst: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            await dst.send_eof()

    def cut(self) -> None:
        """Black-hole the link: live connections die, new ones are closed at once."""
        self.open = False
        for scope in list(self.scopes):
            scope.cancel()


def _patch(root: Path, relay: Relay, ew_port: int, addr_a: str) -> Any:
    def patch(site: str, text: str) -> str:
        demo_policy = '[[policies]]\nallow_sites = ["*"]'
        assert demo_policy in text
        text = text.replace(demo_policy, "")
        if site == "a":
            return text + (
                '\n[fleet]\nsource = "site"\nauthority_site = "a"\n'
                f'store_dir = "{root.resolve() / "fleet-store"}"\nwriters = ["{WRITER}"]\n'
                f'api_address = "{addr_a}"\napi_port = 0\nack_timeout_s = 10.0\n'
            )
        if site == "c":
            peer_a = f'name = "a"\naddress = "{addr_a}"\nport = {ew_port}'
            assert peer_a in text
            text = text.replace(peer_a, f'name = "a"\naddress = "127.0.0.1"\nport = {relay.port}')
        cache = f'store_dir = "{root.resolve() / "c-fleet"}"\n' if site == "c" else ""
        return text + '\n[fleet]\nsource = "site"\nauthority_site = "a"\n' + cache

    return patch


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "gateway.cli", *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return await trio.to_thread.run_sync(lambda: _cli(*args))


def svid_args(ov: Overlay, svid: SvidPaths) -> list[str]:
    api = ov_api(ov)
    bundle = ov.root.resolve() / "ca" / "a.e2e.test" / "bundle.pem"
    return [
        "--site",
        api,
        "--svid",
        str(svid.svid),
        "--key",
        str(svid.key),
        "--bundle",
        f"a.e2e.test={bundle}",
        "--authority-id",
        "spiffe://a.e2e.test/isthmus/gateway/a",
    ]


_API: dict[int, str] = {}


def ov_api(ov: Overlay) -> str:
    return _API[id(ov)]


async def apply(
    ov: Overlay, svid: SvidPaths, path: Path, text: str
) -> subprocess.CompletedProcess[str]:
    await trio.Path(path).write_text(text, "utf-8")
    return await cli("apply", str(path), *svid_args(ov, svid))


def version_of(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, (done.returncode, done.stdout, done.stderr)
    return done.stdout.split()[2]  # "applied version <v> (was ...)"


async def status_from(ov: Overlay, caller: str, target: str) -> int:
    reply = await h1_request(
        str(ov.built[caller].site.address),
        ov.topology.http_port,
        authority=f"whoami.default.{target}.isthmus",
        request_timeout_s=20,
    )
    return reply.status


async def all_run(ov: Overlay, version: str, sites: tuple[str, ...] = SITES) -> None:
    for site in sites:
        await ov.wait(site, "/fleet", lambda d: d["version"] == version, within_s=WITHIN_S)


def _post_without_certificate(host: str, port: int) -> str:
    """A TLS client with no certificate: what it gets (never a 200)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=10)
    try:
        conn.request(
            "POST", "/fleet/apply", body=b"{}", headers={"content-type": "application/json"}
        )
        return f"status {conn.getresponse().status}"
    except (ssl.SSLError, ConnectionError, http.client.HTTPException) as err:
        return f"refused: {type(err).__name__}"
    finally:
        conn.close()


async def test_fleet_from_a_control_site(tmp_path: Path) -> None:
    services: dict[str, tuple[DemoService, ...]] = {
        s: (DemoService("whoami", "http", 18080),) for s in SITES
    }
    topology = with_site(make_topology(list(SITES), services), "c", dial=False)
    addr_a = str(topology.sites[0].address)
    relay = Relay((addr_a, topology.east_west_port))
    async with trio.open_nursery() as nursery:
        await nursery.start(relay.serve, "127.0.0.1")
        patch = _patch(tmp_path, relay, topology.east_west_port, addr_a)
        async with open_overlay(tmp_path, topology, patch=patch, services=True) as ov:
            await _scenario(ov, relay, tmp_path)
        nursery.cancel_scope.cancel()


async def _scenario(ov: Overlay, relay: Relay, tmp_path: Path) -> None:
    ca_a = ov.root.resolve() / "ca" / "a.e2e.test"
    deployer = issue_svid(ca_a, SpiffeId.parse(WRITER), tmp_path / "deployer")
    intruder = issue_svid(
        ca_a, SpiffeId.parse("spiffe://a.e2e.test/ops/intruder"), tmp_path / "intruder"
    )
    view_a = await ov.wait("a", "/fleet", lambda d: d.get("api"), within_s=WITHIN_S)
    _API[id(ov)] = view_a["api"]
    for site in SITES:  # nothing applied yet: every site runs the empty document
        await ov.wait(site, "/fleet", lambda d: d["state"] == "current", within_s=WITHIN_S)
    for site in SITES:
        await ov.wait(
            site, "/routes", lambda d: len(d["routes"].get("whoami.default.isthmus", [])) == 3
        )
    assert await status_from(ov, "a", "b") == 403
    assert await status_from(ov, "b", "c") == 403
    doc = tmp_path / "fleet.toml"

    # 1. An apply by an allowed SVID at the control site: 403 turns into 200 at every site.
    v1 = version_of(await apply(ov, deployer, doc, ALLOW_ALL))
    await all_run(ov, v1)
    for caller, target in (("a", "b"), ("b", "c"), ("c", "a")):
        assert await status_from(ov, caller, target) == 200, (caller, target)
    sites = {s["site"]: s for s in (await ov.get("a", "/fleet"))["sites"]}
    assert sites["b"]["state"] == sites["c"]["state"] == "applied"
    assert sites["b"]["current"] and sites["c"]["current"]

    # 2. A valid certificate with a SPIFFE ID that is not a writer, and no certificate at all,
    #    are refused; nothing changes.
    refused = await apply(ov, intruder, doc, ONLY_B)
    assert refused.returncode == 3, (refused.stdout, refused.stderr)
    assert "spiffe://a.e2e.test/ops/intruder may not write" in refused.stderr
    host, port = ov_api(ov).removeprefix("https://").rsplit(":", 1)
    outcome = await trio.to_thread.run_sync(_post_without_certificate, host, int(port))
    assert outcome.startswith("refused"), outcome
    assert (await ov.get("a", "/fleet"))["version"] == v1
    log_a = ov.log("a")
    assert "by spiffe://a.e2e.test/ops/intruder refused: not a writer" in log_a
    assert "fleet API: connection refused" in log_a
    key_text = deployer.key.read_text()
    body = key_text.strip().splitlines()[1]
    assert body not in log_a  # no key material in the log

    # 3. A version invalid at every site: rejected everywhere, v1 keeps serving, and the
    #    control site's status --fleet says which sites rejected it and why.
    v_bad = version_of(await apply(ov, deployer, doc, BAD_FOR_SITES))
    for site in SITES:
        view = await ov.wait(site, "/fleet", lambda d: d["state"] == "rejected", within_s=WITHIN_S)
        assert view["version"] == v1 and view["rejected"]["version"] == v_bad
    assert await status_from(ov, "b", "c") == 200
    await ov.wait(
        "a",
        "/fleet",
        lambda d: all(s["state"] == "rejected" for s in d["sites"]),
        within_s=WITHIN_S,
    )
    fleet = await cli("status", "--fleet", ov.url("a"), "--json")
    assert fleet.returncode == 1, (fleet.returncode, fleet.stdout, fleet.stderr)
    report = json.loads(fleet.stdout)
    assert report["expected"] == v_bad
    rows = {r["site"]: r for r in report["sites"]}
    assert {s: r["state"] for s, r in rows.items()} == {
        "a": "rejected",
        "b": "rejected",
        "c": "rejected",
    }
    assert all("no peer is named 'nowhere'" in r["why"] for r in rows.values()), rows

    # Rollback to v1 through the same API.
    back = await cli("rollback", v1, *svid_args(ov, deployer))
    assert back.returncode == 0, back.stderr
    await all_run(ov, v1)
    for site in SITES:
        assert (await ov.get(site, "/fleet"))["state"] == "current"

    # 4. c's link to the authority is cut: c keeps v1 and says so; a new version reaches a
    #    and b only; when the link is back, c catches up.
    relay.cut()
    view = await ov.wait("c", "/fleet", lambda d: d["state"] == "unreachable", within_s=WITHIN_S)
    assert view["version"] == v1 and "authority a unreachable since" in view["error"]
    metrics = await trio.to_thread.run_sync(_metrics, ov.url("c"))
    assert "isthmus_fleet_authority_up 0" in metrics
    v2 = version_of(await apply(ov, deployer, doc, ONLY_B))
    await all_run(ov, v2, ("a", "b"))
    await ov.wait(
        "a",
        "/fleet",
        lambda d: {s["site"]: s["state"] for s in d["sites"]}.get("c") == "unreachable",
        within_s=WITHIN_S,
    )
    assert (await ov.get("c", "/fleet"))["version"] == v1
    assert await status_from(ov, "b", "a") == 403  # a runs v2: the policy is b's only
    assert await status_from(ov, "b", "c") == 200  # c keeps serving v1
    relay.open = True
    await all_run(ov, v2, ("c",))
    view = await ov.wait("c", "/fleet", lambda d: d["state"] == "current", within_s=WITHIN_S)
    assert view["error"] is None
    assert await status_from(ov, "b", "c") == 403
    fleet = await cli("status", "--fleet", ov.url("a"))
    assert fleet.returncode == 0, fleet.stdout

    # 5. c restarts while cut off again: it starts on the version it kept (store_dir), not on
    #    its own file alone, and says the authority is unreachable.
    assert version_of(await apply(ov, deployer, doc, ALLOW_ALL)) == v1
    await all_run(ov, v1)
    relay.cut()
    await ov.stop("c")
    await ov.start("c")
    view = await ov.get("c", "/fleet")
    assert view["version"] == v1 and view["state"] == "unreachable", view
    # b redials the restarted c on its own backoff: wait for that link, not a fixed time, and
    # then for c's services to be imported over it (a link is up a moment before its first
    # import lands; one run under load asked in between and got 503)
    await ov.wait("b", "/links", lambda d: d.get("c", {}).get("up") is True, within_s=WITHIN_S)
    await ov.wait(
        "b",
        "/routes",
        lambda d: "c" in d["routes"].get("whoami.default.isthmus", []),
        within_s=WITHIN_S,
    )
    assert await status_from(ov, "b", "c") == 200  # v1's policy: c's own file has none


def _metrics(url: str) -> str:
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url + "/metrics", timeout=10) as response:
        return str(response.read().decode())


# -- a site of two gateways ----------------------------------------------------------------


def _replicated_patch(root: Path, addr_a: str, b1: str, b2: str, ew_port: int) -> Any:
    """a: the control site, with peer b by its two replicas; b (each replica): a's pushes."""

    def patch(site: str, text: str) -> str:
        if site == "a":
            one = f'address = "{b1}"\nport = {ew_port}\n'
            assert text.count(one) == 1, text
            text = text.replace(one, f'addresses = ["{b1}:{ew_port}", "{b2}:{ew_port}"]\n')
            return text + (
                '\n[fleet]\nsource = "site"\nauthority_site = "a"\n'
                f'store_dir = "{root.resolve() / "fleet-store"}"\nwriters = ["{WRITER}"]\n'
                f'api_address = "{addr_a}"\napi_port = 0\nack_timeout_s = 10.0\n'
            )
        return text + '\n[fleet]\nsource = "site"\nauthority_site = "a"\n'

    return patch


async def _start_second_replica(ov: Overlay, address: str, patch: Any) -> None:
    """b's second gateway ("b2"): b's config on the next loopback address, its own SVID (the
    same SPIFFE ID, issued by b's CA), the same fleet settings."""
    b = ov.built["b"]
    directory = ov.root / "b2"
    ca_dir = ov.root / "ca" / b.site.trust_domain.name
    await trio.to_thread.run_sync(issue_svid, ca_dir, b.site.gateway_id, directory / "identity")
    site = type(b.site)(
        name="b",
        trust_domain=b.site.trust_domain,
        address=ipaddress.IPv4Address(address),
        services=b.site.services,
        priority=b.site.priority,
    )
    text = gateway_config_text(ov.topology, site, ov.root.resolve())
    text = text.replace(str(ov.root.resolve() / "b" / "identity"), str(directory / "identity"))
    config = directory / "gateway.toml"
    config.write_text(patch("b", text), "utf-8")
    ov.built["b2"] = BuiltSite(site, config, directory)
    await ov.start("b2")


def _b_row(view: dict[str, Any]) -> dict[str, Any]:
    return next((s for s in view["sites"] if s["site"] == "b"), {"replicas": [], "current": 0})


async def test_one_apply_reaches_every_replica_of_a_site(tmp_path: Path) -> None:
    topology = make_topology(["a", "b"])
    addr_a = str(topology.sites[0].address)
    b1 = str(topology.sites[1].address)
    b2 = str(ipaddress.IPv4Address(int(topology.sites[1].address) + 1))
    ew = topology.east_west_port
    patch = _replicated_patch(tmp_path, addr_a, b1, b2, ew)
    async with open_overlay(tmp_path, topology, patch=patch) as ov:
        await _start_second_replica(ov, b2, patch)
        await ov.wait("a", "/links", lambda d: d["b"]["replicas_up"] == 2, within_s=WITHIN_S)
        view_a = await ov.wait("a", "/fleet", lambda d: d.get("api"), within_s=WITHIN_S)
        _API[id(ov)] = view_a["api"]
        deployer = issue_svid(
            ov.root.resolve() / "ca" / "a.e2e.test", SpiffeId.parse(WRITER), tmp_path / "dep"
        )
        doc = tmp_path / "fleet.toml"

        # 1. One apply at the control site: both of b's gateways run it, each says so in its
        #    own /fleet, and the control site shows each replica's answer.
        v1 = version_of(await apply(ov, deployer, doc, ALLOW_ALL))
        await all_run(ov, v1, ("a", "b", "b2"))
        for replica in ("b", "b2"):
            assert (await ov.get(replica, "/fleet"))["state"] == "current"
        view = await ov.wait("a", "/fleet", lambda d: _b_row(d)["current"], within_s=WITHIN_S)
        row = _b_row(view)
        assert row["lagging"] == [] and row["state"] == "applied" and row["version"] == v1
        assert [(r["replica"], r["state"], r["version"]) for r in row["replicas"]] == [
            (f"{b1}:{ew}", "applied", v1),
            (f"{b2}:{ew}", "applied", v1),
        ]

        # 2. b2 stops: the next version reaches b's live replica, b counts as current (b2
        #    holds nobody back) and the control site says since when b2 is cut off.
        await ov.stop("b2")
        await ov.wait("a", "/links", lambda d: d["b"]["replicas_up"] == 1, within_s=WITHIN_S)
        v2 = version_of(await apply(ov, deployer, doc, ONLY_B))
        await all_run(ov, v2, ("a", "b"))

        def b2_cut_off(d: dict[str, Any]) -> bool:
            row = _b_row(d)
            states = {r["replica"]: r["state"] for r in row["replicas"]}
            return bool(row["current"]) and states.get(f"{b2}:{ew}") == "unreachable"

        view = await ov.wait("a", "/fleet", b2_cut_off, within_s=WITHIN_S)
        down = next(r for r in _b_row(view)["replicas"] if r["replica"] == f"{b2}:{ew}")
        assert down["version"] == v1 and down["down_since"]
        fleet = await cli("status", "--fleet", ov.url("a"))
        assert fleet.returncode == 0, fleet.stdout
        assert f"replica {b2}:{ew} unreachable since" in fleet.stdout

        # 3. b2 comes back (on its own file alone): it gets the current version.
        await ov.start("b2")
        await all_run(ov, v2, ("b2",))
        await ov.wait(
            "a",
            "/fleet",
            lambda d: all(r["version"] == v2 for r in _b_row(d)["replicas"]),
            within_s=WITHIN_S,
        )
