"""The bound on concurrent TLS handshakes: in order, bounded queue, refused cleanly, never hung.

The gate alone runs on the autojump clock; the acceptor's use of it runs real TLS 1.3 on
127.0.0.1 with generous hang guards (nothing asserts on elapsed time); the dialer's use of it
(peering) runs on the autojump clock with a dial that takes a while and fails.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from discovery.snapshot import Catalog
from discovery.watch import Watch
from foundation.spiffe_id import SpiffeId
from overlay.identity.rotation import Identity
from overlay.link.accept import serve_links
from overlay.link.dial import open_link
from overlay.link.handshake_gate import HandshakeBusy, HandshakeGate
from overlay.link.link import Link, LinkError, LinkTimeout
from overlay.peering.config import PeeringSettings, PeerSpec
from overlay.peering.links import gated
from overlay.peering.peers import Peering
from tests.overlay.identity.cases import CA_B, SERVER_CHAIN, SERVER_ID, SERVER_KEY, TRUSTED
from tests.overlay.identity.certfactory import identity, make_leaf

CLIENT_ID = "spiffe://b.test/gateway/client"
CLIENT_CHAIN, CLIENT_KEY = make_leaf(CA_B, uris=[CLIENT_ID])
HANG_GUARD = 30.0  # >= 5x every timeout these tests configure


# -- the gate --------------------------------------------------------------------------------


async def test_gate_admits_in_arrival_order_and_never_more_than_its_limit(
    autojump_clock: trio.abc.Clock,
) -> None:
    gate = HandshakeGate(2)
    order: list[int] = []
    peak = 0

    async def handshake(i: int) -> None:
        nonlocal peak
        async with gate.slot():
            order.append(i)
            peak = max(peak, gate.running)
            await trio.sleep(1.0)

    async with trio.open_nursery() as nursery:
        for i in range(7):
            nursery.start_soon(handshake, i)
            await trio.sleep(0.01)  # arrivals in this order
    assert order == list(range(7)) and peak == 2
    assert gate.running == 0 and gate.waiting == 0


async def test_full_queue_refuses_at_once_and_a_cancelled_wait_takes_no_slot(
    autojump_clock: trio.abc.Clock,
) -> None:
    gate = HandshakeGate(1, max_waiting=1)
    release = trio.Event()

    async def hold() -> None:
        async with gate.slot():
            await release.wait()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(hold)
        await trio.sleep(0.01)
        with trio.move_on_after(1.0) as waited:  # the one waiting place: taken, then given up
            await gate.acquire()
        assert waited.cancelled_caught and gate.waiting == 0
        nursery.start_soon(hold)  # waits
        await trio.sleep(0.01)
        assert gate.waiting == 1
        with pytest.raises(HandshakeBusy):
            await gate.acquire()
        assert gate.refused == 1
        release.set()
    assert gate.running == 0


# -- the acceptor ----------------------------------------------------------------------------


@asynccontextmanager
async def gated_server(gate: HandshakeGate) -> AsyncIterator[int]:
    ident = identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED))

    async def handler(link: Link) -> None:
        await link.stream.send_all(b"ok")

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            lambda task_status: serve_links(
                handler,
                host="127.0.0.1",
                port=0,
                identity=ident,
                authorize=lambda _sid: True,
                handshake_timeout=5,
                gate=gate,
                task_status=task_status,
            )
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def dial(port: int, client: Identity) -> bytes:
    link = await open_link(
        "127.0.0.1", port, identity=client, expected=SpiffeId.parse(SERVER_ID), timeout=5
    )
    async with link:
        return await link.stream.receive_some(10)


async def wait_for(check: Callable[[], bool]) -> None:
    """Poll ``check`` (real time, bounded by the hang guard)."""
    for _ in range(int(HANG_GUARD / 0.01)):
        if check():
            return
        await trio.sleep(0.01)
    raise AssertionError("never happened")


async def test_acceptor_queues_a_handshake_behind_a_stalled_one() -> None:
    """A connection that never sends its ClientHello holds the only slot: the next one waits
    (it is not started beside it), and goes ahead as soon as the slot is free."""
    gate = HandshakeGate(1)
    client = identity(CLIENT_CHAIN, CLIENT_KEY, dict(TRUSTED))
    async with gated_server(gate) as port:
        stalled = await trio.open_tcp_stream("127.0.0.1", port)
        await wait_for(lambda: gate.running == 1)
        answers: list[bytes] = []

        async def dial_one() -> None:
            answers.append(await dial(port, client))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(dial_one)
            await wait_for(lambda: gate.waiting == 1)
            assert answers == []
            await stalled.aclose()  # its handshake fails: the slot goes to the waiting one
        assert answers == [b"ok"]
        await wait_for(lambda: gate.running == 0)


async def test_acceptor_refuses_cleanly_when_its_queue_is_full() -> None:
    """Past the queue a connection is closed at once: the dialer gets an error, no hang."""
    gate = HandshakeGate(1, max_waiting=0)
    client = identity(CLIENT_CHAIN, CLIENT_KEY, dict(TRUSTED))
    async with gated_server(gate) as port:
        stalled = await trio.open_tcp_stream("127.0.0.1", port)
        await wait_for(lambda: gate.running == 1)
        with trio.fail_after(HANG_GUARD), pytest.raises(LinkError):
            await dial(port, client)
        assert gate.refused == 1
        await stalled.aclose()
        with trio.fail_after(HANG_GUARD):
            await wait_for(lambda: gate.running == 0)
            assert await dial(port, client) == b"ok"  # and it serves the next one


# -- the dialer (peering) --------------------------------------------------------------------


async def test_gated_dial_waits_for_a_slot_within_its_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    gate = HandshakeGate(1)
    entered = trio.Event()

    async def slow_dial(host: str, port: int, **_kw: object) -> Link:
        entered.set()
        await trio.sleep(100)
        raise LinkError("never")

    dial_gated = gated(slow_dial, gate)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: dial_gated("h", 1, identity=None, expected=None, timeout=200))  # type: ignore[arg-type]
        await entered.wait()
        with pytest.raises(LinkTimeout, match="handshake slot"):
            await dial_gated("h", 1, identity=None, expected=None, timeout=5)  # type: ignore[arg-type]
        assert gate.running == 1 and gate.waiting == 0  # the timed-out wait took nothing
        nursery.cancel_scope.cancel()
    assert gate.running == 0


async def test_peering_dials_no_more_handshakes_at_once_than_the_limit(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Six peers to dial, a limit of two: never more than two dials (connect + handshake)
    at once, and every peer still gets dialed."""
    running = peak = 0
    dialed: set[str] = set()

    async def slow_failing_dial(host: str, port: int, **_kw: object) -> Link:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        dialed.add(host)
        try:
            await trio.sleep(2.0)
        finally:
            running -= 1
        raise LinkError(f"{host}: refused")

    server = identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED))
    peers = [
        PeerSpec(f"p{i}", f"10.0.0.{i}", 1, SpiffeId.parse(f"spiffe://a.test/gateway/p{i}"))
        for i in range(6)
    ]
    peering = Peering(
        local_site="me",
        identity=server,
        peers=peers,
        catalog=Watch(Catalog()),
        export_rules=(),
        settings=PeeringSettings(max_concurrent_handshakes=2),
        rng=lambda: 0.5,
        dial=slow_failing_dial,
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peering.run)
        await trio.sleep(20)
        nursery.cancel_scope.cancel()
    assert peak == 2
    assert dialed == {p.host for p in peers}
