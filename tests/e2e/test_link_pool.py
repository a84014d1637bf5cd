"""A peer's link pool with real gateway processes: east dials west (west only accepts), west's
links take :data:`SLOTS` streams each, and east reaches west through a TCP relay of this test's
own, so one link's TCP connection can be cut.

A caller holding more tunnels than one link has slots (well within its share) gets them all:
east opens extra links, ``/links`` shows each, and another caller's requests still succeed.
Cutting the primary link's TCP connection does not take the peer down while an extra link is
up.  Nothing is asserted about time: every wait has a hang guard of several route timeouts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from tests.e2e.harness import Overlay, make_topology, open_overlay, routes_of, with_site
from tests.e2e.link_fair_load import ENDPOINT_PORT, endpoint, idle_tunnel, victim_load

HTTP_PORT = 15080
SERVICE = b"slowsvc.default.isthmus"
SLOTS = 8  # west's link_max_concurrent_streams: the streams east may open on one link
TUNNELS = 12  # one caller's idle tunnels: more than a link takes, within its share (100)
ROUTE_TIMEOUT_S = 15.0
HANG_GUARD_S = 10 * ROUTE_TIMEOUT_S


@dataclass
class Relay:
    """A TCP relay: east's links to west go through it; :meth:`cut` ends one at once."""

    target: tuple[str, int]
    pairs: list[tuple[trio.SocketStream, trio.SocketStream]] = field(default_factory=list)

    async def handle(self, down: trio.SocketStream) -> None:
        try:
            up = await trio.open_tcp_stream(*self.target)
        except OSError:  # west is not up yet: east redials on its backoff
            await trio.aclose_forcefully(down)
            return
        self.pairs.append((down, up))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, down, up, nursery.cancel_scope)
            nursery.start_soon(self._pump, up, down, nursery.cancel_scope)

    @staticmethod
    async def _pump(src: trio.SocketStream, dst: trio.SocketStream, done: trio.CancelScope) -> None:
        try:
            while data := await src.receive_some(65536):
                await dst.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass
        done.cancel()
        for s in (src, dst):
            await trio.aclose_forcefully(s)

    async def cut(self, index: int) -> None:
        for s in self.pairs[index]:
            await trio.aclose_forcefully(s)


@asynccontextmanager
async def pooled_sites(
    tmp_path: Path, east_limits: str = ""
) -> AsyncIterator[tuple[Overlay, str, Relay]]:
    topology = with_site(make_topology(["east", "west"]), "east", dial=False)
    east_addr = str(next(s for s in topology.sites if s.name == "east").address)
    west_addr = str(next(s for s in topology.sites if s.name == "west").address)
    relay_host = east_addr.rsplit(".", 1)[0] + ".9"
    relay = Relay((west_addr, topology.east_west_port))
    relay_listeners = await trio.open_tcp_listeners(0, host=relay_host)
    relay_port = relay_listeners[0].socket.getsockname()[1]

    def patch(site: str, text: str) -> str:
        if site == "east":
            peer = f'name = "west"\naddress = "{west_addr}"\nport = {topology.east_west_port}\n'
            assert peer in text
            text = text.replace(
                peer, f'name = "west"\naddress = "{relay_host}"\nport = {relay_port}\n'
            )
            return text + (f"\n[limits]\n{east_limits}\n" if east_limits else "")
        return text + (
            f"\n[limits]\nlink_max_concurrent_streams = {SLOTS}\n"
            f'\n[[sources]]\nkind = "static"\nname = "slowsvc"\n[[sources.endpoints]]\n'
            f'service = "slowsvc"\naddress = "{west_addr}"\nport = {ENDPOINT_PORT}\n'
            f'protocol = "http1"\n'
        )

    listeners = await trio.open_tcp_listeners(ENDPOINT_PORT, host=west_addr)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, endpoint, listeners)
        await nursery.start(trio.serve_listeners, relay.handle, relay_listeners)
        async with open_overlay(tmp_path, topology, patch=patch) as ov:
            await ov.wait("east", "/routes", lambda d: routes_of(d, SERVICE.decode()))
            yield ov, east_addr, relay
        nursery.cancel_scope.cancel()


def _links(doc: Any) -> list[dict[str, Any]]:
    return list(doc["west"]["links"])


async def test_a_caller_over_one_links_slots_gets_an_extra_link_and_others_still_pass(
    tmp_path: Path,
) -> None:
    async with pooled_sites(tmp_path) as (ov, east, relay):
        prefix = east.rsplit(".", 1)[0]
        caller, other = f"{prefix}.7", f"{prefix}.8"
        before = (await ov.get("east", "/links"))["west"]
        assert [r["role"] for r in _links({"west": before})] == ["primary"]
        held: list[trio.SocketStream] = []
        statuses: list[int] = []

        async def tunnel() -> None:
            status, _ = await idle_tunnel(east, HTTP_PORT, SERVICE + b":80", caller, held)
            statuses.append(status)

        with trio.fail_after(HANG_GUARD_S):
            async with trio.open_nursery() as nursery:
                for _ in range(TUNNELS):
                    nursery.start_soon(tunnel)
            pooled = await ov.get("east", "/links")
            outcome = await victim_load(east, HTTP_PORT, SERVICE, other, total=50, concurrency=5)
        assert statuses == [200] * TUNNELS, statuses
        rows = _links(pooled)
        assert len(rows) >= 2 and rows[0]["role"] == "primary", rows
        assert all(r["role"] == "extra" and r["dialed"] for r in rows[1:]), rows
        assert all(r["open_streams"] <= r["max_streams"] == SLOTS for r in rows), rows
        assert outcome.ok == len(outcome.statuses) == 50, outcome.statuses
        west_rows = [r["role"] for r in (await ov.get("west", "/links"))["east"]["links"]]
        assert west_rows[0] == "primary" and set(west_rows[1:]) == {"extra"}, west_rows

        # Cut the primary link's TCP connection (the relay's first): an extra link takes its
        # place (and federation with it), the peer never goes down, requests still pass.
        established = pooled["west"]["links_established"]
        await relay.cut(0)
        with trio.fail_after(HANG_GUARD_S):
            while "takes the primary's place" not in ov.log("east"):
                doc = (await ov.get("east", "/links"))["west"]
                assert doc["up"], doc
                await trio.sleep(0.2)
            doc = (await ov.get("east", "/links"))["west"]
            after = await victim_load(east, HTTP_PORT, SERVICE, other, total=20, concurrency=5)
        assert doc["up"] and doc["links"][0]["role"] == "primary", doc
        assert doc["links_established"] == established, doc
        assert after.ok == 20, after.statuses
        for stream in held:
            await stream.aclose()


async def test_a_callers_share_holds_across_the_peers_links(tmp_path: Path) -> None:
    """Share 10, links of 8 slots: the caller's 10 tunnels need two links and get them; its
    11th on get the 503 naming the limit (after the short wait), and another caller passes."""
    limits = "link_caller_max_streams = 10\nlink_caller_wait_s = 0.5"
    async with pooled_sites(tmp_path, limits) as (ov, east, _relay):
        prefix = east.rsplit(".", 1)[0]
        caller, other = f"{prefix}.7", f"{prefix}.8"
        held: list[trio.SocketStream] = []
        results: list[tuple[int, bytes]] = []

        async def tunnel() -> None:
            results.append(await idle_tunnel(east, HTTP_PORT, SERVICE + b":80", caller, held))

        with trio.fail_after(HANG_GUARD_S):
            async with trio.open_nursery() as nursery:
                for _ in range(16):
                    nursery.start_soon(tunnel)
            rows = _links(await ov.get("east", "/links"))
            outcome = await victim_load(east, HTTP_PORT, SERVICE, other, total=50, concurrency=5)
        for stream in held:
            await stream.aclose()
    assert sorted(status for status, _ in results) == [200] * 10 + [503] * 6, results
    assert all(b"link_caller_max_streams = 10" in a for s, a in results if s == 503)
    assert len(rows) >= 2, rows  # 10 tunnels do not fit on one link of 8 slots
    assert outcome.ok == len(outcome.statuses) == 50, outcome.statuses
