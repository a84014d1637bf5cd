"""One caller must not stall a site's cross-site traffic: three attacks on a link, real
gateway processes (east and west), a real endpoint at west.

While one caller (its own loopback address) holds 100 idle ``CONNECT`` tunnels, leaves 12
large responses unread, or floods rapid resets through its gateway, another caller's requests
to the same remote service must succeed (at least 99 %), and the flood must never close the
link.  Nothing is asserted about time: every wait has a hang guard of several route timeouts,
and the victim's p99 latency is printed (``pytest -s``) for the README's figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from tests.e2e.harness import Overlay, make_topology, open_overlay, routes_of
from tests.e2e.link_fair_load import (
    ENDPOINT_PORT,
    endpoint,
    hold_slow_body,
    idle_tunnel,
    reset_flood,
    unread_response,
    victim_load,
    wait_endpoint_holds,
)

HTTP_PORT = 15080
SERVICE = b"slowsvc.default.isthmus"
ROUTE_TIMEOUT_S = 15.0  # the default the gateways run with
HANG_GUARD_S = 10 * ROUTE_TIMEOUT_S
VICTIM_REQUESTS = 200


@asynccontextmanager
async def _two_sites(tmp_path: Path, limits: str = "") -> AsyncIterator[tuple[Overlay, str]]:
    """east and west with defaults (plus ``limits``, a ``[limits]`` body, on both); west
    serves ``slowsvc`` from the test's endpoint."""
    topology = make_topology(["east", "west"])
    west_addr = str(next(s for s in topology.sites if s.name == "west").address)

    def patch(site: str, text: str) -> str:
        if limits:
            text += f"\n[limits]\n{limits}\n"
        if site != "west":
            return text
        return text + (
            f'\n[[sources]]\nkind = "static"\nname = "slowsvc"\n[[sources.endpoints]]\n'
            f'service = "slowsvc"\naddress = "{west_addr}"\nport = {ENDPOINT_PORT}\n'
            f'protocol = "http1"\n'
        )

    listeners = await trio.open_tcp_listeners(ENDPOINT_PORT, host=west_addr)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, endpoint, listeners)
        async with open_overlay(tmp_path, topology, patch=patch) as ov:
            await ov.wait("east", "/routes", lambda d: routes_of(d, SERVICE.decode()))
            yield ov, str(ov.built["east"].site.address)
        nursery.cancel_scope.cancel()


def _callers(east: str) -> tuple[str, str]:
    """Two loopback source addresses in east's block: the attacker's and the victim's."""
    prefix = east.rsplit(".", 1)[0]
    return f"{prefix}.7", f"{prefix}.8"


async def _victim(east: str, victim: str) -> tuple[int, int, float]:
    outcome = await victim_load(
        east, HTTP_PORT, SERVICE, victim, total=VICTIM_REQUESTS, concurrency=10
    )
    statuses = sorted(Counter(outcome.statuses).items())  # which failure, when one shows
    print(f"victim: {outcome.ok}/{len(outcome.statuses)} ok, p99 {outcome.p99():.3f} s, {statuses}")
    return outcome.ok, len(outcome.statuses), outcome.p99()


async def _open_idle_tunnels(
    east: str, attacker: str, held: list[trio.SocketStream], count: int
) -> tuple[list[int], list[bytes]]:
    """Open ``count`` idle CONNECT tunnels from ``attacker`` at once; their statuses and answers
    (the open ones stay in ``held``)."""
    statuses: list[int] = []
    answers: list[bytes] = []

    async def tunnel() -> None:
        status, answer = await idle_tunnel(east, HTTP_PORT, SERVICE + b":80", attacker, held)
        statuses.append(status)
        answers.append(answer)

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(tunnel)
    return statuses, answers


async def test_idle_tunnels_of_one_caller_do_not_take_the_link(tmp_path: Path) -> None:
    async with _two_sites(tmp_path) as (_ov, east):
        attacker, victim = _callers(east)
        held: list[trio.SocketStream] = []
        with trio.fail_after(HANG_GUARD_S):
            statuses, _answers = await _open_idle_tunnels(east, attacker, held, 100)
            assert len(statuses) == 100 and set(statuses) <= {200, 503}, statuses
            ok, done, _p99 = await _victim(east, victim)
        for stream in held:
            await stream.aclose()
    assert done == VICTIM_REQUESTS and ok >= 0.99 * VICTIM_REQUESTS, (ok, done)


async def test_slow_bodies_of_one_caller_do_not_take_the_link(tmp_path: Path) -> None:
    """110 tasks each keep one slow body open: at least 100 at a time, more than the link had
    slots before (100, shared by everyone); with fair sharing the caller holds its 100 and
    the rest of its requests get 503s, while the victim's go through."""
    async with _two_sites(tmp_path) as (_ov, east):
        attacker, victim = _callers(east)
        with trio.fail_after(HANG_GUARD_S):
            async with trio.open_nursery() as nursery:
                for _ in range(110):
                    nursery.start_soon(hold_slow_body, east, HTTP_PORT, SERVICE, attacker)
                await wait_endpoint_holds(99, within_s=ROUTE_TIMEOUT_S)
                ok, done, _p99 = await _victim(east, victim)
                nursery.cancel_scope.cancel()
    assert done == VICTIM_REQUESTS and ok >= 0.99 * VICTIM_REQUESTS, (ok, done)


@pytest.mark.parametrize("engine", ["lean", "h2"])
async def test_responses_one_caller_does_not_read_do_not_stall_the_link(
    tmp_path: Path, engine: str
) -> None:
    """On either HTTP/2 engine of links (``link_h2_engine``): the connection window is
    credited on receipt, so what one caller leaves unread stalls only its own tunnels."""
    async with _two_sites(tmp_path, f'link_h2_engine = "{engine}"') as (_ov, east):
        attacker, victim = _callers(east)
        held: list[trio.SocketStream] = []
        with trio.fail_after(HANG_GUARD_S):
            for _ in range(12):
                await unread_response(east, HTTP_PORT, SERVICE, attacker, held)
            await trio.sleep(3)  # the unread responses fill every buffer on their way
            ok, done, _p99 = await _victim(east, victim)
        for stream in held:
            await stream.aclose()
    assert done == VICTIM_REQUESTS and ok >= 0.99 * VICTIM_REQUESTS, (ok, done)


async def test_a_reset_flood_through_the_origin_never_closes_the_link(tmp_path: Path) -> None:
    async with _two_sites(tmp_path) as (ov, east):
        _attacker, victim = _callers(east)
        before = {s: (await ov.get(s, "/links")) for s in ("east", "west")}
        sent: list[int] = []

        async def flooder() -> None:
            sent.append(await reset_flood(east, HTTP_PORT, SERVICE.decode(), resets=150))

        with trio.fail_after(HANG_GUARD_S):
            async with trio.open_nursery() as nursery:
                for _ in range(4):  # 600 resets, each connection under its own budget
                    nursery.start_soon(flooder)
                result = await _victim(east, victim)
        after = {s: (await ov.get(s, "/links")) for s in ("east", "west")}
        await trio.sleep(1)  # let the gateways' last log lines reach their files
        # Each side logs every link that goes down ("link to/from <peer> is down: ...");
        # the other link of the pair would hide one going down from ``/links``.
        downs = {s: [ln for ln in ov.log(s).splitlines() if " is down" in ln] for s in after}
    assert downs == {"east": [], "west": []}, downs
    assert sum(sent) == 600
    for site, peer in (("east", "west"), ("west", "east")):
        assert after[site][peer]["links_established"] == before[site][peer]["links_established"]
        assert after[site][peer]["up"]
    ok, done, _p99 = result
    assert done == VICTIM_REQUESTS and ok >= 0.99 * VICTIM_REQUESTS, (ok, done)


async def test_a_caller_over_its_share_of_the_link_gets_a_503_not_the_others(
    tmp_path: Path,
) -> None:
    """A small link (30 slots) and a share of 10: the attacker's 11th tunnel on gets a 503
    naming the limit after the short wait, and the victim still gets through."""
    limits = (
        "link_max_concurrent_streams = 30\nlink_caller_max_streams = 10\nlink_caller_wait_s = 0.5"
    )
    async with _two_sites(tmp_path, limits) as (_ov, east):
        attacker, victim = _callers(east)
        held: list[trio.SocketStream] = []
        with trio.fail_after(HANG_GUARD_S):
            statuses, answers = await _open_idle_tunnels(east, attacker, held, 40)
            ok, done, _p99 = await _victim(east, victim)
        for stream in held:
            await stream.aclose()
    assert sorted(statuses) == [200] * 10 + [503] * 30, statuses
    assert all(b"link_caller_max_streams = 10" in a for a in answers if a[9:12] == b"503")
    assert done == VICTIM_REQUESTS and ok >= 0.99 * VICTIM_REQUESTS, (ok, done)
