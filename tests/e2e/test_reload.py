"""Configuration without restart, on real gateway processes.

A gateway is reloaded (``isthmus reload``, SIGHUP, ``POST /config/reload``) while callers keep
sending requests: a valid config changes routing with no failed request, an invalid one is
rejected with every problem and the old config keeps serving, and SIGHUP never kills it.
"""

from __future__ import annotations

import http.client
import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.demo.runner import service_argv, start_child
from gateway.demo.topology import DemoService, gateway_config_text
from tests.e2e.clients import h1_request
from tests.e2e.harness import (
    Overlay,
    both_modes,
    linked,
    make_topology,
    open_overlay,
    routes_of,
)

# Every reload runs as well through a supervisor and its workers (they apply the text the
# supervisor applied, and hold the catalog it made, before its answer).
pytestmark = pytest.mark.usefixtures("both_modes")
__all__ = ["both_modes"]  # the fixture, imported for the mark

HTTP_PORT = 15080
OLD_PORT, NEW_PORT = 18080, 18081
EXTRA_PORT, SERVICE_PORT = 15090, 16090
AUTHORITY = "whoami.default.isthmus"
WORKERS = 4
MAX_REQUESTS = 2000  # per worker: the loop is bounded in count...
LOAD_WITHIN_S = 120.0  # ...and in time (a hang guard, never a speed assertion)
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _topology() -> Any:
    return make_topology(["solo"], {"solo": (DemoService("whoami", "http", OLD_PORT),)})


def _addr(ov: Overlay) -> str:
    return str(ov.built["solo"].site.address)


def _config(ov: Overlay) -> Path:
    return ov.built["solo"].config_path


def _post(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with _OPENER.open(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def _admin_reload(ov: Overlay) -> tuple[int, Any]:
    return await trio.to_thread.run_sync(_post, ov.url("solo") + "/config/reload")


async def _cli_reload(ov: Overlay) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "gateway.cli", "reload", str(_config(ov))]
    return await trio.to_thread.run_sync(
        lambda: subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    )


async def _whoami_site(ov: Overlay) -> str:
    reply = await h1_request(_addr(ov), HTTP_PORT, authority=AUTHORITY, request_timeout_s=20)
    assert reply.status == 200, (reply.status, reply.body[:300])
    return str(reply.json()["site"])


async def _until_serving(host: str, port: int) -> None:
    with trio.fail_after(30):
        while True:
            try:
                await trio.to_thread.run_sync(_open_close, host, port)
                return
            except OSError:
                await trio.sleep(0.1)


def _open_close(host: str, port: int) -> None:
    import socket

    with socket.create_connection((host, port), timeout=2):
        pass


async def _start_blue(ov: Overlay) -> None:
    """A second whoami that says site "blue": where the new config sends the service."""
    built = ov.built["solo"]
    argv = service_argv("http", _addr(ov), NEW_PORT, "blue")
    child = await start_child("solo/blue", argv, built.directory / "blue.log")
    ov.children["solo/blue"] = child
    await _until_serving(_addr(ov), NEW_PORT)


async def test_reload_under_load_changes_routing_with_no_failed_request(
    tmp_path: Path, both_modes: int
) -> None:
    """Four callers, each request on a new connection, while ``isthmus reload`` swaps the
    static endpoint: no request fails, and every request started after the answer goes to
    the new endpoint.  What is promised while the reload is under way depends on the mode
    (see the last checks): with workers, a caller may see the old endpoint after the new."""
    async with open_overlay(tmp_path, _topology(), services=True) as ov:
        await _start_blue(ov)
        assert await _whoami_site(ov) == "solo"
        before = await ov.get("solo", "/config")
        #: Per caller, each answer: (whether the request started after the reload answered,
        #: the site that answered).
        seen: list[list[tuple[bool, str]]] = [[] for _ in range(WORKERS)]
        failures: list[str] = []
        reloaded = trio.Event()
        warmed_up = trio.Event()  # steady load first: 40 answers before the reload

        async def worker(i: int) -> None:
            blue_after_reload = 0
            for _ in range(MAX_REQUESTS):
                after = reloaded.is_set()
                try:
                    site = await _whoami_site(ov)
                except (AssertionError, OSError) as exc:
                    failures.append(f"worker {i}: {exc!r}")
                    continue
                seen[i].append((after, site))
                if sum(len(s) for s in seen) >= 40:
                    warmed_up.set()
                if after and site == "blue":
                    blue_after_reload += 1
                    if blue_after_reload >= 20:
                        return

        with trio.fail_after(LOAD_WITHIN_S):
            async with trio.open_nursery() as nursery:
                for i in range(WORKERS):
                    nursery.start_soon(worker, i)
                await warmed_up.wait()
                text = _config(ov).read_text("utf-8")
                assert text.count(f"port = {OLD_PORT}") == 1
                _config(ov).write_text(text.replace(f"port = {OLD_PORT}", f"port = {NEW_PORT}"))
                result = await _cli_reload(ov)
                assert result.returncode == 0, result.stderr
                assert "applied version" in result.stdout
                reloaded.set()

        assert failures == []
        sites = [[site for _after, site in answers] for answers in seen]
        assert sum(s.count("solo") for s in sites) >= 40  # the old endpoint, first
        for answers in seen:
            # Every request that started once the reload had answered went to the new one.
            assert [site for after, site in answers if after] == ["blue"] * 20
        if not both_modes:
            # One process swaps its catalog in one step: a caller never goes back.  With
            # workers each one switches on its own while the reload is under way (a caller
            # whose connections land on both may see old, new, old), and all have switched
            # once it answers: the check above.
            for s in sites:
                assert set(s[s.index("blue") :]) == {"blue"}
        after = await ov.get("solo", "/config")
        assert after["version"] != before["version"]
        assert after["last_reload"]["result"] == "applied"
        assert after["last_reload"]["changes"] == ["sources"]
        assert f"-> {after['version']}; changed: sources" in ov.log("solo")


FRESH_CONNECTIONS = 40  # after the answer: with 2 workers, both get some (all on one: 2**-39)


async def _requests_per_worker(ov: Overlay) -> dict[int, int]:
    doc = await ov.get("solo", "/workers")
    return {row["index"]: int(row.get("requests", 0)) for row in doc["workers"]}


async def test_reload_answered_applied_is_in_force_on_every_new_connection(
    tmp_path: Path, both_modes: int
) -> None:
    """Once ``isthmus reload`` says "applied", every new connection routes by the new config:
    with workers too, whichever worker the kernel hands the connection to (each worker gets
    the new catalog from the supervisor as a snapshot, apart from the config text)."""
    async with open_overlay(tmp_path, _topology(), services=True) as ov:
        await _start_blue(ov)
        assert await _whoami_site(ov) == "solo"
        before = await _requests_per_worker(ov) if both_modes else {}
        text = _config(ov).read_text("utf-8")
        _config(ov).write_text(text.replace(f"port = {OLD_PORT}", f"port = {NEW_PORT}"))
        status, doc = await _admin_reload(ov)  # the quickest caller: no process to exit
        assert (status, doc["result"]) == (200, "applied"), doc
        sites = [await _whoami_site(ov) for _ in range(FRESH_CONNECTIONS)]
        assert sites == ["blue"] * FRESH_CONNECTIONS, sites
        if both_modes:  # every worker answered some of them
            after = await _requests_per_worker(ov)
            assert sorted(after) == list(range(both_modes))
            assert all(after[i] > before.get(i, 0) for i in after), (before, after)


async def test_invalid_reload_is_rejected_with_every_problem_and_old_config_serves(
    tmp_path: Path,
) -> None:
    async with open_overlay(tmp_path, _topology(), services=True) as ov:
        assert await _whoami_site(ov) == "solo"
        before = await ov.get("solo", "/config")
        good = _config(ov).read_text("utf-8")
        bad = good.replace(f"port = {OLD_PORT}", "port = 70000").replace(
            'allow_sites = ["*"]', 'allow_sites = ["*"]\nallow_ids = ["not-a-spiffe-id"]'
        )
        bad += "\n[limits]\nmax_headers = 0\n"
        _config(ov).write_text(bad)
        status, doc = await _admin_reload(ov)
        assert status == 422 and doc["result"] == "rejected"
        paths = sorted(p["path"] for p in doc["problems"])
        assert paths == [
            "limits.max_headers",
            "policies[0].allow_ids[0]",
            "sources[0].endpoints[0].port",
        ]
        assert all(p["line"] for p in doc["problems"])
        assert doc["version"] == before["version"]
        # The CLI reports the same problems (it validates before it asks) and exits 2.
        result = await _cli_reload(ov)
        assert result.returncode == 2
        assert "limits.max_headers" in result.stderr and "allow_ids" in result.stderr
        # Valid, but not applicable live: rejected whole, nothing of it applied.
        _config(ov).write_text(
            good.replace(f"port = {OLD_PORT}", f"port = {NEW_PORT}")
            + "\n[limits]\nmax_connections = 50\n"
        )
        status, doc = await _admin_reload(ov)
        assert status == 422
        assert [p["path"] for p in doc["problems"]] == ["limits.max_connections"]
        # The old config still serves, unchanged.
        assert await _whoami_site(ov) == "solo"
        after = await ov.get("solo", "/config")
        assert after["version"] == before["version"]
        assert after["applied_at"] == before["applied_at"]
        log = ov.log("solo")
        assert "rejected, 3 problems; version " + before["version"] + " keeps running" in log
        assert "limits.max_headers" in log


async def test_sighup_reloads_and_never_kills_the_gateway(tmp_path: Path) -> None:
    async with open_overlay(tmp_path, _topology(), services=True) as ov:
        await _start_blue(ov)
        process = ov.children["solo"].process
        before = await ov.get("solo", "/config")
        process.send_signal(signal.SIGHUP)  # same file: nothing to change
        doc = await ov.wait(
            "solo",
            "/config",
            lambda d: d["last_reload"] and d["last_reload"]["trigger"] == "SIGHUP",
        )
        assert process.returncode is None
        assert doc["last_reload"]["result"] == "unchanged"
        assert doc["version"] == before["version"]
        # An invalid file on SIGHUP: logged, rejected, still serving.
        text = _config(ov).read_text("utf-8")
        _config(ov).write_text(text + "\n[limits]\nmax_headers = 0\n")
        process.send_signal(signal.SIGHUP)
        await ov.wait("solo", "/config", lambda d: d["last_reload"]["result"] == "rejected")
        assert await _whoami_site(ov) == "solo"
        # A valid change on SIGHUP is applied.
        _config(ov).write_text(text.replace(f"port = {OLD_PORT}", f"port = {NEW_PORT}"))
        process.send_signal(signal.SIGHUP)
        await ov.wait("solo", "/config", lambda d: d["last_reload"]["result"] == "applied")
        assert await _whoami_site(ov) == "blue"
        assert process.returncode is None


def _keepalive_get(conn: http.client.HTTPConnection) -> tuple[int, Any]:
    conn.request("GET", "/", headers={"Host": AUTHORITY})
    response = conn.getresponse()
    return response.status, json.loads(response.read())


async def test_listeners_are_added_and_removed_without_dropping_live_connections(
    tmp_path: Path,
) -> None:
    async with open_overlay(tmp_path, _topology(), services=True) as ov:
        host = _addr(ov)
        assert await _whoami_site(ov) == "solo"
        # A caller keeps one HTTP/1.1 connection open across the reload.
        live = http.client.HTTPConnection(host, HTTP_PORT, timeout=20)
        try:
            assert (await trio.to_thread.run_sync(_keepalive_get, live))[0] == 200
            text = _config(ov).read_text("utf-8")
            sni = ov.topology.sni_port
            assert text.count(f"port = {sni}") == 1
            extra = (
                f'\n[[listeners]]\nname = "http-extra"\nkind = "http"\naddress = "{host}"\n'
                f"port = {EXTRA_PORT}\n"
                f'\n[[service_ports]]\nname = "whoami-port"\naddress = "{host}"\n'
                f'port = {SERVICE_PORT}\ntarget = "{AUTHORITY}"\nprotocol = "http"\n'
            )
            # Add an http listener and a service port, remove the sni listener.
            without_sni = text.replace(
                f'[[listeners]]\nname = "sni"\nkind = "sni"\naddress = "{host}"\nport = {sni}\n',
                "",
            )
            assert without_sni != text
            _config(ov).write_text(without_sni + extra)
            status, doc = await _admin_reload(ov)
            assert status == 200 and doc["result"] == "applied", doc
            assert doc["changes"] == ["listeners"]
            # The live connection on the untouched listener still works...
            assert (await trio.to_thread.run_sync(_keepalive_get, live))[0] == 200
        finally:
            live.close()
        # ...the new ones serve...
        reply = await h1_request(host, EXTRA_PORT, authority=AUTHORITY)
        assert reply.status == 200 and reply.json()["site"] == "solo"
        reply = await h1_request(host, SERVICE_PORT, authority="anything")
        assert reply.status == 200 and reply.json()["site"] == "solo"
        # ...and the removed one no longer accepts.
        try:
            await trio.to_thread.run_sync(_open_close, host, sni)
        except ConnectionRefusedError:
            pass
        else:
            raise AssertionError("the removed sni listener still accepts connections")
        # A listener whose address cannot be bound rejects the reload whole.
        text = _config(ov).read_text("utf-8")
        busy = text.replace(f"port = {EXTRA_PORT}", f"port = {EXTRA_PORT + 1}").replace(
            'name = "http-extra"', 'name = "http-busy"'
        )
        blocker = trio.socket.socket()
        await blocker.bind((host, EXTRA_PORT + 1))
        blocker.listen()
        try:
            _config(ov).write_text(busy)
            status, doc = await _admin_reload(ov)
        finally:
            blocker.close()
        assert status == 422 and doc["result"] == "rejected", doc
        assert [p["path"] for p in doc["problems"]] == ["listeners[3].port"]
        assert "already in use" in doc["problems"][0]["message"]
        # Nothing of it applied: the old extra listener still serves.
        assert (await h1_request(host, EXTRA_PORT, authority=AUTHORITY)).status == 200


async def test_exports_and_policies_change_for_new_requests_links_stay_up(
    tmp_path: Path,
) -> None:
    topology = make_topology(
        ["east", "west"],
        {
            "west": (
                DemoService("whoami", "http", OLD_PORT),
                DemoService("reports", "http", 18090),
            )
        },
    )
    async with open_overlay(tmp_path, topology, services=True) as ov:
        east, west = str(ov.built["east"].site.address), ov.built["west"]
        await ov.wait("east", "/routes", lambda d: routes_of(d, "reports.default.isthmus"))
        await ov.wait("east", "/routes", lambda d: routes_of(d, AUTHORITY))
        links_before = (await ov.get("east", "/links"))["west"]["links_established"]
        failures: list[str] = []
        answered = 0
        done = trio.Event()

        async def steady() -> None:  # whoami stays exported and allowed throughout
            nonlocal answered
            for _ in range(MAX_REQUESTS):
                if done.is_set():
                    return
                try:
                    reply = await h1_request(east, HTTP_PORT, authority=AUTHORITY)
                    assert reply.status == 200, (reply.status, reply.body[:200])
                    answered += 1
                except (AssertionError, OSError) as exc:
                    failures.append(repr(exc))

        text = west.config_path.read_text("utf-8")
        exports_all = '[[exports]]\nservice = "*"'
        assert exports_all in text
        restricted = text.replace(exports_all, '[[exports]]\nservice = "whoami"')
        with trio.fail_after(LOAD_WITHIN_S):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(steady)
                west.config_path.write_text(restricted)
                status, doc = await trio.to_thread.run_sync(
                    _post, ov.url("west") + "/config/reload"
                )
                assert status == 200 and doc["changes"] == ["exports"], doc
                await ov.wait(
                    "east", "/routes", lambda d: not routes_of(d, "reports.default.isthmus")
                )
                done.set()
        assert failures == [] and answered > 0
        assert (await h1_request(east, HTTP_PORT, authority="reports.default.isthmus")).status in (
            404,
            503,
        )
        # A policy that no longer lets east in: new requests are refused at west.
        no_policy = restricted.replace('[[policies]]\nallow_sites = ["*"]', "")
        assert no_policy != restricted
        west.config_path.write_text(no_policy)
        status, doc = await trio.to_thread.run_sync(_post, ov.url("west") + "/config/reload")
        assert status == 200 and doc["changes"] == ["policies"], doc
        refused = await h1_request(east, HTTP_PORT, authority=AUTHORITY)
        assert refused.status == 403, (refused.status, refused.body[:200])
        # Back to the first config: both services again, over the same link all along.
        west.config_path.write_text(text)
        status, doc = await trio.to_thread.run_sync(_post, ov.url("west") + "/config/reload")
        assert status == 200 and doc["changes"] == ["policies", "exports"], doc
        await ov.wait("east", "/routes", lambda d: routes_of(d, "reports.default.isthmus"))
        assert (await h1_request(east, HTTP_PORT, authority=AUTHORITY)).status == 200
        links_after = (await ov.get("east", "/links"))["west"]["links_established"]
        assert links_after == links_before


async def test_identity_file_paths_change_without_restart(tmp_path: Path) -> None:
    async with open_overlay(tmp_path, _topology(), services=True) as ov:
        built = ov.built["solo"]
        old_dir = built.directory / "identity"
        new_dir = built.directory / "identity-moved"
        new_dir.mkdir()
        for name in ("svid.pem", "svid_key.pem"):
            (new_dir / name).write_bytes((old_dir / name).read_bytes())
        text = _config(ov).read_text("utf-8")
        assert text.count(str(old_dir / "svid.pem")) == 1
        moved = text.replace(str(old_dir / "svid"), str(new_dir / "svid")).replace(
            "poll_interval_s = 1.0", "poll_interval_s = 0.1"
        )
        # A path that does not exist: rejected with the reason, the old identity serves.
        _config(ov).write_text(moved.replace("svid_key.pem", "missing_key.pem"))
        status, doc = await _admin_reload(ov)
        assert status == 422 and [p["path"] for p in doc["problems"]] == ["identity"], doc
        assert "not usable" in doc["problems"][0]["message"]
        # The moved files: applied; callers keep being served.
        _config(ov).write_text(moved)
        status, doc = await _admin_reload(ov)
        assert status == 200 and doc["changes"] == ["identity"], doc
        assert await _whoami_site(ov) == "solo"
        health = await ov.get("solo", "/healthz")
        assert health["status"] == "ok"
        # The watcher follows the new paths: a bad file there is noticed (and refused).
        (new_dir / "svid.pem").write_text("not a certificate\n")
        for _ in range(300):  # hang guard: 30 s for a 0.1 s poll
            if "rejected new identity files" in ov.log("solo"):
                break
            await trio.sleep(0.1)
        else:
            raise AssertionError("the identity watcher did not look at the new paths")
        assert await _whoami_site(ov) == "solo"


def _peer_block(text: str, name: str) -> str:
    """The ``[[peers]]`` table named ``name`` in a generated config (through its last line)."""
    start = text.index(f'[[peers]]\nname = "{name}"')
    end = text.index("\ndial = ", start)
    end = text.index("\n", end + 1) + 1
    return text[start:end]


async def test_peers_are_added_and_removed_other_links_stay_up(tmp_path: Path) -> None:
    whoami = DemoService("whoami", "http", OLD_PORT)
    topology = make_topology(["east", "west", "north"], {"west": (whoami,), "north": (whoami,)})

    def without_north(site: str, text: str) -> str:
        return text.replace(_peer_block(text, "north"), "") if site == "east" else text

    async with open_overlay(tmp_path, topology, patch=without_north, services=True) as ov:
        east = str(ov.built["east"].site.address)
        config = ov.built["east"].config_path
        await ov.wait("east", "/routes", lambda d: routes_of(d, AUTHORITY) == ["west"])
        assert "north" not in await ov.get("east", "/links")
        west_links = (await ov.get("east", "/links"))["west"]["links_established"]
        # Add north: east links to it and routes to it; the link to west stays.
        east_site = ov.built["east"].site
        text_with_north = gateway_config_text(topology, east_site, ov.root.resolve())
        assert _peer_block(text_with_north, "north") not in config.read_text("utf-8")
        config.write_text(text_with_north)
        status, doc = await trio.to_thread.run_sync(_post, ov.url("east") + "/config/reload")
        assert status == 200 and doc["changes"] == ["peers"], doc
        await ov.wait(
            "east", "/routes", lambda d: sorted(routes_of(d, AUTHORITY) or []) == ["north", "west"]
        )
        await ov.wait("east", "/links", lambda d: linked(d, "north"))  # every worker's too
        reply = await h1_request(east, HTTP_PORT, authority="whoami.default.north.isthmus")
        assert reply.status == 200 and reply.json()["site"] == "north"
        assert (await ov.get("east", "/links"))["west"]["links_established"] == west_links
        north_links = (await ov.get("east", "/links"))["north"]["links_established"]
        # Remove west: its link closes, its imports leave at once, north's link stays.
        config.write_text(text_with_north.replace(_peer_block(text_with_north, "west"), ""))
        status, doc = await trio.to_thread.run_sync(_post, ov.url("east") + "/config/reload")
        assert status == 200 and doc["changes"] == ["peers"], doc
        await ov.wait("east", "/routes", lambda d: routes_of(d, AUTHORITY) == ["north"])
        links = await ov.get("east", "/links")
        assert "west" not in links and links["north"]["links_established"] == north_links
        pinned = await h1_request(east, HTTP_PORT, authority="whoami.default.west.isthmus")
        assert pinned.status == 404
        assert (await h1_request(east, HTTP_PORT, authority=AUTHORITY)).json()["site"] == "north"


async def test_limits_apply_to_connections_accepted_after_the_reload(tmp_path: Path) -> None:
    async with open_overlay(tmp_path, _topology(), services=True) as ov:
        host = _addr(ov)
        big = {"x-padding": "p" * 3000}
        before = await h1_request(host, HTTP_PORT, authority=AUTHORITY, headers=big)
        assert before.status == 200
        text = _config(ov).read_text("utf-8")
        _config(ov).write_text(text + "\n[limits]\nmax_header_bytes = 2048\n")
        status, doc = await _admin_reload(ov)
        assert status == 200 and doc["changes"] == ["limits"], doc
        after = await h1_request(host, HTTP_PORT, authority=AUTHORITY, headers=big)
        assert after.status == 431, (after.status, after.body[:200])
        assert (await h1_request(host, HTTP_PORT, authority=AUTHORITY)).status == 200
