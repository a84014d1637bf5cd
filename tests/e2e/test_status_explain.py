"""``isthmus status`` and ``isthmus explain`` against real gateway processes (sites ``a`` and
``b``; ``b`` runs ``api``, which its policy lets every site call, and ``secret``, which no
policy lets another site call).

The commands run as processes (``python -m gateway.cli``), reading the gateways' admin API:
status exits 0 on the healthy overlay and 1 once ``b`` was killed (by PID), its link shown
down; explain shows the candidate sites in order with reasons, ``b``'s own verdict (asked of
``b`` over the link: allowed for ``api``, denied for ``secret``) and the endpoint ``b`` would
choose; for an unknown service it says why (404) -- and nothing is ever sent: ``b``'s request
counters do not move.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import trio

from gateway.demo.topology import DemoService
from tests.e2e.harness import Overlay, make_topology, open_overlay, routes_of
from tests.e2e.test_observe import scrape, value

API = DemoService("api", "http", 18191)
SECRET = DemoService("secret", "http", 18192)
ALLOW_ALL = '[[policies]]\nallow_sites = ["*"]\n'
ONLY_API = '[[policies]]\nservice = "api"\nallow_sites = ["*"]\n'


def _patch(site: str, text: str) -> str:
    assert ALLOW_ALL in text
    return text.replace(ALLOW_ALL, ONLY_API) if site == "b" else text


async def cli(*args: str) -> tuple[int, str, str]:
    """Run ``isthmus ARGS`` as a process (bounded: a hang-guard, not a speed bound)."""
    with trio.fail_after(60):
        done = await trio.run_process(
            [sys.executable, "-m", "gateway.cli", *args],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    return done.returncode, done.stdout.decode(), done.stderr.decode()


async def status(ov: Overlay, site: str) -> tuple[int, dict[str, Any]]:
    rc, out, err = await cli("status", "--admin", ov.url(site), "--json")
    assert rc in (0, 1), (rc, err)
    return rc, json.loads(out)


async def explain(ov: Overlay, site: str, url: str, *extra: str) -> tuple[int, dict[str, Any]]:
    rc, out, err = await cli("explain", url, "--admin", ov.url(site), "--json", *extra)
    assert rc in (0, 1), (rc, err)
    return rc, json.loads(out)


async def _converged(ov: Overlay) -> None:
    for address in ("api.default.isthmus", "secret.default.isthmus"):
        await ov.wait("a", "/routes", lambda d, a=address: routes_of(d, a) == ["b"])  # type: ignore[misc]


async def test_status_is_healthy_then_shows_the_killed_peer_down(tmp_path: Path) -> None:
    topology = make_topology(["a", "b"], {"b": (API,)})
    async with open_overlay(tmp_path, topology, services=True) as ov:
        await ov.wait("a", "/routes", lambda d: routes_of(d, "api.default.isthmus") == ["b"])
        rc, doc = await status(ov, "a")
        assert rc == 0, doc["problems"]
        assert doc["healthy"] is True and doc["problems"] == []
        [link] = doc["links"]
        assert link["peer"] == "b" and link["state"] == "up"
        assert link["trust_domain"] == "b.e2e.test"
        assert doc["routes"]["api.default.isthmus"] == ["b"]
        [imported] = doc["imports"]
        assert imported["peer"] == "b" and imported["stale"] is False
        rc, out, _ = await cli("status", "--admin", ov.url("a"))  # the table
        assert rc == 0 and "healthy" in out and "b" in out
        # The link and federation figures are metrics too (one series per configured peer).
        found = await scrape(ov, "a")
        for name in (
            "isthmus_link_open_streams",
            "isthmus_link_flow_control_stalls_total",
            "isthmus_link_reconnects_total",
            "isthmus_link_abuse_goaways_total",
            "isthmus_export_ack_lag_seconds",
            "isthmus_export_version",
        ):
            assert any(n == name and lab == {"peer": "b"} for n, lab, _ in found), name
        assert value(found, "isthmus_link_reconnects_total", peer="b") == 0
        assert value(found, "isthmus_link_abuse_goaways_total", peer="b") == 0

        await ov.kill("b")
        # Wait on behaviour (the PING timeout retires the link); 30 s is only a hang-guard.
        with trio.fail_after(30):
            while True:
                rc, doc = await status(ov, "a")
                if rc != 0:
                    break
                await trio.sleep(0.2)
        assert rc == 1
        assert doc["healthy"] is False
        assert doc["links"][0]["state"] == "down"
        assert any("link to b is down" in p for p in doc["problems"]), doc["problems"]
        rc, out, _ = await cli("status", "--admin", ov.url("a"))
        assert rc == 1 and "DEGRADED" in out and "down" in out

    # An admin API nobody answers is not "degraded": its own exit code, a clear message.
    rc, _, err = await cli("status", "--admin", ov.url("a"))
    assert rc == 3 and "cannot reach the admin API" in err
    rc, _, err = await cli("status", "--admin", "not a url")
    assert rc == 2 and "--admin" in err


async def test_explain_traces_without_sending(tmp_path: Path) -> None:
    topology = make_topology(["a", "b"], {"b": (API, SECRET)})
    async with open_overlay(tmp_path, topology, services=True, patch=_patch) as ov:
        await _converged(ov)
        before = await scrape(ov, "b")
        before_a = await scrape(ov, "a")

        rc, trace = await explain(ov, "a", "http://api.default.isthmus/hello")
        assert rc == 0, trace
        assert trace["status"] is None and trace["site"] == "b"
        assert trace["route"] == "default"
        [cand] = trace["candidates"]
        assert cand["site"] == "b" and cand["decision"] == "chosen" and cand["link"] == "up"
        assert cand["policy"] == "allowed", cand  # b's verdict, asked over the link
        b_address = str(ov.built["b"].site.address)
        assert trace["endpoint"] == cand["endpoint"]
        assert cand["endpoint"]["address"] == b_address and cand["endpoint"]["port"] == API.port
        assert trace["limits"]["route_timeout_s"]
        assert trace["sent"] is False

        rc, trace = await explain(ov, "a", "http://secret.default.isthmus/")
        assert rc == 1
        [cand] = trace["candidates"]
        assert cand["decision"] == "chosen" and cand["policy"] == "denied", cand
        assert trace["status"] == 403 and "may not call" in trace["outcome"]

        rc, trace = await explain(ov, "a", "http://nope.default.isthmus/")
        assert rc == 1
        assert trace["status"] == 404 and trace["candidates"] == []
        assert "no site knows the service" in trace["outcome"]

        # The readable form names each part.
        rc, out, _ = await cli("explain", "http://api.default.isthmus/", "--admin", ov.url("a"))
        assert rc == 0 and "chosen" in out and "policy allowed" in out and "nothing was sent" in out

        # Nothing was sent: neither gateway counted a request.
        after, after_a = await scrape(ov, "b"), await scrape(ov, "a")
        for found, earlier in ((after, before), (after_a, before_a)):
            assert value(found, "isthmus_requests_total") == value(
                earlier, "isthmus_requests_total"
            )

        # A question from another site goes to its gateway, which lets only the sites its
        # [debug] explain_peers lists have its trace (none here): refused, exit 2
        # (tests/e2e/test_explain_from.py has the sites that answer).
        rc, _, err = await cli(
            "explain", "http://api.default.isthmus/", "--admin", ov.url("a"), "--from", "b"
        )
        assert rc == 2 and "site b refuses to explain" in err, err


async def _get_from(
    source: str, host: str, port: int, headers: dict[str, str]
) -> tuple[str, dict[str, str], Any]:
    """GET api.default.isthmus through the HTTP listener from source address ``source``."""
    sock = trio.socket.socket()
    with sock:
        await sock.bind((source, 0))
        await sock.connect((host, port))
        stream = trio.SocketStream(sock)
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        request = f"GET /hi HTTP/1.1\r\nHost: api.default.isthmus\r\n{extra}Connection: close\r\n"
        await stream.send_all(f"{request}\r\n".encode())
        data = b""
        with trio.fail_after(30):
            while piece := await stream.receive_some(65536):
                data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.decode("latin-1").split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines)}
    return status, fields, json.loads(body)


async def test_the_debug_header_is_honoured_only_for_an_allowed_caller(tmp_path: Path) -> None:
    topology = make_topology(["a", "b"], {"b": (API,)})
    block = str(topology.sites[0].address).split(".")[1]
    allowed, other = f"127.{block}.8.1", f"127.{block}.9.1"

    def patch(site: str, text: str) -> str:
        return text + f'\n[debug]\nallow_cidrs = ["{allowed}/32"]\n' if site == "a" else text

    async with open_overlay(tmp_path, topology, services=True, patch=patch) as ov:
        await ov.wait("a", "/routes", lambda d: routes_of(d, "api.default.isthmus") == ["b"])
        host = str(ov.built["a"].site.address)
        ask = {"x-isthmus-debug": "trace", "authorization": "Bearer s3cr3t-0001"}

        status, fields, body = await _get_from(allowed, host, topology.http_port, ask)
        assert status.startswith("HTTP/1.1 200"), status
        trace = fields["x-isthmus-trace"]
        assert "b=chosen" in trace and f"to=b/{ov.built['b'].site.address}:{API.port}" in trace
        assert "s3cr3t" not in trace
        sent = {name for name, _ in body["headers"]}
        assert "x-isthmus-debug" not in sent  # never reaches the endpoint

        status, fields, body = await _get_from(other, host, topology.http_port, ask)
        assert status.startswith("HTTP/1.1 200"), status
        assert "x-isthmus-trace" not in fields  # ignored for a caller not on the list
        assert "x-isthmus-debug" not in {name for name, _ in body["headers"]}
