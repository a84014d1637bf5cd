"""Requests and TCP flows crossing real gateways (issue 5).

Three gateway processes on loopback, each with its own trust domain, plus the demo's example
services as their own processes.  Callers are plain HTTP/1.1 (stdlib) and HTTP/2
prior-knowledge clients; nothing in them knows about Isthmus.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from gateway.demo.topology import DemoService, DemoServicePort
from tests.e2e.clients import Reply, h1_request, h2_request
from tests.e2e.harness import Overlay, make_topology, open_overlay, routes_of

HTTP_PORT = 15080
MIB = 1024 * 1024


def _topology(**overrides: Any) -> Any:
    return make_topology(
        ["east", "west", "north"],
        {
            "east": (DemoService("whoami", "http", 18080),),
            "west": (
                DemoService("whoami", "http", 18080),
                DemoService("api", "http2", 18082, namespace="payments"),
                DemoService("echo", "tcp", 18081),
                DemoService("reports", "http", 18090),
            ),
            "north": (
                DemoService("whoami", "http", 18080),
                DemoService("reports", "http", 18090),
            ),
        },
        service_ports=(DemoServicePort(16001, "echo.default.isthmus", "tcp"),),
        **overrides,
    )


async def _converged(ov: Overlay) -> None:
    """Every site routes whoami to all three sites (links up, catalogs federated)."""
    for site in ("east", "west", "north"):
        await ov.wait(
            site, "/routes", lambda d: len(routes_of(d, "whoami.default.isthmus") or []) == 3
        )


def _addr(ov: Overlay, site: str) -> str:
    return str(ov.built[site].site.address)


async def _call(ov: Overlay, site: str, authority: str, **kw: Any) -> Reply:
    return await h1_request(_addr(ov, site), HTTP_PORT, authority=authority, **kw)


async def _until_ok(ov: Overlay, site: str, authority: str, *, within_s: float = 20.0) -> Reply:
    """Retry until a 200 (services and routes come up asynchronously)."""
    last: Any = None
    with trio.move_on_after(within_s):
        while True:
            try:
                last = await _call(ov, site, authority)
                if last.status == 200:
                    return last  # type: ignore[no-any-return]
            except OSError as exc:
                last = exc
            await trio.sleep(0.2)
    raise AssertionError(f"{authority} via {site}: no 200 within {within_s}s; last {last!r}")


def _rss_bytes(ov: Overlay, site: str) -> int:
    status = Path(f"/proc/{ov.children[site].process.pid}/status").read_text()
    kb = next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
    return int(kb) * 1024


async def test_http1_and_http2_callers_reach_other_sites_both_transcodings(
    tmp_path: Path,
) -> None:
    async with open_overlay(tmp_path, _topology(), services=True) as ov:
        await _converged(ov)
        # HTTP/1.1 caller -> HTTP/2 endpoint in another site (1 -> 2 at east, 2 -> 2 at west).
        reply = await _until_ok(ov, "east", "api.payments.isthmus")
        doc = reply.json()
        assert doc["site"] == "west" and doc["method"] == "GET"
        # HTTP/2 caller -> HTTP/1.1 endpoint pinned to another site (2 -> 1 at west).
        await _until_ok(ov, "east", "whoami.default.west.isthmus")
        h2 = await h2_request(
            _addr(ov, "east"),
            HTTP_PORT,
            authority="whoami.default.west.isthmus",
            path="/from-h2?x=1",
            method="POST",
            body=b"hello over h2",
        )
        assert h2.status == 200
        doc = h2.json()
        assert doc["site"] == "west" and doc["path"] == "/from-h2?x=1"
        assert doc["body_length"] == len(b"hello over h2")
        # Any-site address: the local site first.
        assert (await _call(ov, "east", "whoami.default.isthmus")).json()["site"] == "east"
        # Unknown address: 404 naming it.
        missing = await _call(ov, "east", "nope.default.isthmus")
        assert missing.status == 404 and b"nope.default.isthmus" in missing.body
        # HTTP proxy mode: an unmodified client with HTTP_PROXY sends an absolute-form target.
        proxied = await _call(
            ov, "east", "ignored.example", path="http://whoami.default.north.isthmus/p"
        )
        assert proxied.status == 200 and proxied.json()["site"] == "north"


async def test_caller_cannot_spoof_identity_headers_and_policy_denies(tmp_path: Path) -> None:
    def patch(site: str, text: str) -> str:
        # north lets only west call it from other sites.
        return (
            text.replace('allow_sites = ["*"]', 'allow_sites = ["west"]')
            if site == "north"
            else text
        )

    async with open_overlay(tmp_path, _topology(), patch=patch, services=True) as ov:
        await _converged(ov)
        await _until_ok(ov, "west", "reports.default.north.isthmus")
        spoof = {
            "isthmus-caller-id": "spiffe://north.e2e.test/isthmus/gateway/north",
            "isthmus-caller-site": "north",
            "isthmus-deadline-ms": "999999999",
        }
        reply = await _call(ov, "east", "whoami.default.west.isthmus", headers=spoof)
        assert reply.status == 200
        names = {name.lower() for name, _ in reply.json()["headers"]}
        assert not any(n.startswith("isthmus-") for n in names), names
        # east is not allowed to call north; the spoofed site header does not help.
        denied = await _call(ov, "east", "reports.default.north.isthmus", headers=spoof)
        assert denied.status == 403, denied
        allowed = await _call(ov, "west", "reports.default.north.isthmus")
        assert allowed.status == 200 and allowed.json()["site"] == "north"


async def test_tcp_service_port_crosses_sites_with_half_close(tmp_path: Path) -> None:
    async with open_overlay(tmp_path, _topology(), services=True) as ov:
        await _converged(ov)
        await ov.wait("east", "/routes", lambda d: routes_of(d, "echo.default.isthmus") == ["west"])
        payload = b"ping " * 1000
        with trio.fail_after(20):
            while True:
                stream = await trio.open_tcp_stream(_addr(ov, "east"), 16001)
                try:
                    await stream.send_all(payload)
                    await stream.send_eof()  # half-close: the echo still answers
                    got = b""
                    while piece := await stream.receive_some(65536):
                        got += piece
                finally:
                    await stream.aclose()
                if got:
                    break
                await trio.sleep(0.2)  # the echo service may not listen yet
        assert got == payload


def _chunks(total: int, size: int = MIB) -> Iterator[bytes]:
    block = b"\xab" * size
    for _ in range(total // size):
        yield block


async def test_100_mib_streams_through_without_memory_growth(tmp_path: Path) -> None:
    async with open_overlay(tmp_path, _topology(), services=True) as ov:
        await _converged(ov)
        await _until_ok(ov, "east", "whoami.default.west.isthmus")
        before = {s: _rss_bytes(ov, s) for s in ("east", "west")}
        reply = await _call(
            ov,
            "east",
            "whoami.default.west.isthmus",
            method="POST",
            body=_chunks(100 * MIB),
            request_timeout_s=120.0,
        )
        assert reply.status == 200
        assert reply.json()["body_length"] == 100 * MIB
        growth = {s: _rss_bytes(ov, s) - before[s] for s in before}
        print(f"100 MiB east->west; RSS growth {growth}")
        assert all(g < 40 * MIB for g in growth.values()), growth


async def test_slow_reader_slows_the_writer(tmp_path: Path) -> None:
    """A TCP endpoint that does not read: the caller can only push a bounded amount."""
    topology = _topology()
    west_addr = str(next(s for s in topology.sites if s.name == "west").address)
    sink_port = 18777

    def patch(site: str, text: str) -> str:
        if site != "west":
            return text
        return text + (
            f'\n[[sources]]\nkind = "static"\nname = "sink"\n[[sources.endpoints]]\n'
            f'service = "sink"\naddress = "{west_addr}"\nport = {sink_port}\nprotocol = "tcp"\n'
        )

    listeners = await trio.open_tcp_listeners(sink_port, host=west_addr)
    accepted: list[trio.SocketStream] = []
    arrived = trio.Event()

    async def hold(stream: trio.SocketStream) -> None:
        accepted.append(stream)
        arrived.set()
        await trio.sleep_forever()  # never reads until the test says so

    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, hold, listeners)
        async with open_overlay(tmp_path, topology, patch=patch, services=True) as ov:
            await _converged(ov)
            await ov.wait("east", "/routes", lambda d: routes_of(d, "sink.default.isthmus"))
            # CONNECT through east's HTTP proxy to the sink in west.
            stream = await trio.open_tcp_stream(_addr(ov, "east"), HTTP_PORT)
            await stream.send_all(
                b"CONNECT sink.default.isthmus:9 HTTP/1.1\r\nHost: sink.default.isthmus:9\r\n\r\n"
            )
            head = await stream.receive_some(4096)
            assert head.startswith(b"HTTP/1.1 200"), head
            with trio.fail_after(10):
                await arrived.wait()
            pushed = 0
            chunk = b"x" * 65536
            with trio.move_on_after(5):
                while pushed < 512 * MIB:
                    await stream.send_all(chunk)
                    pushed += len(chunk)
            print(f"writer stalled after {pushed / MIB:.1f} MiB with a reader that reads nothing")
            assert pushed < 64 * MIB  # socket buffers + windows, not the whole stream
            # Once the sink reads, everything pushed arrives (plus whatever part of the last,
            # interrupted send_all made it out).
            got = 0
            with trio.fail_after(30):
                while got < pushed:
                    got += len(await accepted[0].receive_some(1 << 20))
            assert pushed <= got <= pushed + len(chunk)
            await stream.aclose()
        nursery.cancel_scope.cancel()


async def test_failover_when_a_gateway_dies_and_back_when_it_returns(tmp_path: Path) -> None:
    async with open_overlay(tmp_path, _topology(), services=True) as ov:
        await _converged(ov)
        # reports runs in west (priority 20) and north (priority 30); east has none.
        await ov.wait(
            "east",
            "/routes",
            lambda d: routes_of(d, "reports.default.isthmus") == ["west", "north"],
        )
        assert (await _until_ok(ov, "east", "reports.default.isthmus")).json()["site"] == "west"
        await ov.kill("west")
        served_by: list[str] = []
        failures = 0
        # Hang guard: over 10x the detection bound (ping_interval_s + ping_timeout_s = 1.5 s).
        # How long failover takes is measured by scripts/bench_failover.py.
        with trio.fail_after(20):
            while not served_by or served_by[-1] != "north":
                reply = await _call(ov, "east", "reports.default.isthmus")
                if reply.status == 200:
                    served_by.append(reply.json()["site"])
                else:
                    failures += 1
                    print("failed:", reply.status, reply.body[:200])
                await trio.sleep(0.05)
        assert failures == 0  # a request that never reached west is retried at north
        await ov.start("west")
        with trio.fail_after(30):
            site = ""
            while site != "west":
                site = (await _call(ov, "east", "reports.default.isthmus")).json()["site"]
                await trio.sleep(0.2)


@pytest.mark.parametrize("caller", ["h1", "h2"])
async def test_unhealthy_everywhere_is_503(tmp_path: Path, caller: str) -> None:
    """A known address whose only site cannot serve it answers 503, not 404; an address
    pinned to a site that is neither this one nor a configured peer is 404 (unknown site)."""
    async with open_overlay(tmp_path, _topology(), services=True) as ov:
        await _converged(ov)
        await _until_ok(ov, "east", "api.payments.isthmus")
        await ov.kill("west")
        with trio.fail_after(20):
            while True:
                if caller == "h1":
                    status = (await _call(ov, "east", "api.payments.west.isthmus")).status
                else:
                    status = (
                        await h2_request(
                            _addr(ov, "east"), HTTP_PORT, authority="api.payments.west.isthmus"
                        )
                    ).status
                if status == 503:
                    break
                await trio.sleep(0.2)
        # The down peer stays 503 (known site); a site no one configured is 404, naming it.
        for authority in ("api.payments.west.isthmus", "api.payments.no-such-site.isthmus"):
            if caller == "h1":
                reply = await _call(ov, "east", authority)
            else:
                reply = await h2_request(_addr(ov, "east"), HTTP_PORT, authority=authority)
            expected = 503 if "west" in authority else 404
            assert reply.status == expected, (authority, reply)
        assert b"no-such-site" in reply.body and b"unknown site" in reply.body


async def test_dead_endpoint_at_a_site_fails_over_to_the_next_site(tmp_path: Path) -> None:
    """west still advertises ``reports`` (static config says healthy) but its process is gone:
    west's gateway cannot connect, refuses the stream, and east retries at north at once."""
    async with open_overlay(tmp_path, _topology(), services=True) as ov:
        await _converged(ov)
        await ov.wait(
            "east",
            "/routes",
            lambda d: routes_of(d, "reports.default.isthmus") == ["west", "north"],
        )
        assert (await _until_ok(ov, "east", "reports.default.isthmus")).json()["site"] == "west"
        await ov.kill("west/reports")
        for _ in range(10):
            reply = await _call(ov, "east", "reports.default.isthmus")
            assert reply.status == 200, reply
            assert reply.json()["site"] == "north"
