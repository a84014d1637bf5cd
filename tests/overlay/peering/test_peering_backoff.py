"""Reconnect backoff of the peering dialer, over real TLS 1.3 on 127.0.0.1 (autojump clock).

The defect this guards against: under TLS 1.3 the client's handshake completes before the
server has checked the client's certificate, so a peer that rejects our SVID (its bundle of
our trust domain was removed) looks like a successful dial followed by an alert or EOF on the
first read.  Resetting the backoff on every successful handshake made such a gateway redial
several times a second.  The backoff may restart only once a link is *established*.
"""

from __future__ import annotations

import functools
import itertools
import logging
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import pytest
import trio

from discovery.backoff import Backoff
from discovery.snapshot import Catalog
from discovery.watch import Watch
from foundation.spiffe_id import SpiffeId
from overlay.identity.rotation import Identity
from overlay.peering.config import PeeringSettings, PeerSpec
from overlay.peering.peers import Peering
from tests.overlay.identity.cases import CA_A, CA_B, SERVER_CHAIN, SERVER_ID, SERVER_KEY, TRUSTED
from tests.overlay.identity.certfactory import identity, make_leaf

CLIENT_ID = "spiffe://b.test/gateway/client"
CLIENT_CHAIN, CLIENT_KEY = make_leaf(CA_B, uris=[CLIENT_ID])
BACKOFF = Backoff(base_s=0.25, cap_s=30.0)
DRAW = 0.5  # the dialer's "random" draw: every delay is exactly half its ceiling


@asynccontextmanager
async def rejecting_peer(arrivals: list[float]) -> AsyncIterator[int]:
    """A TLS 1.3 server (our own server context) that no longer trusts b.test: it rejects the
    dialer's certificate after the dialer's handshake has completed.  Records each arrival."""
    server = identity(SERVER_CHAIN, SERVER_KEY, {"a.test": (CA_A.cert,)})

    async def handle(tcp: trio.SocketStream) -> None:
        arrivals.append(trio.current_time())
        stream = trio.SSLStream(tcp, server.state.server_ctx, server_side=True)
        try:
            with trio.fail_after(5):
                await stream.do_handshake()
                await stream.receive_some(1024)
        except (trio.BrokenResourceError, trio.TooSlowError):
            pass
        finally:
            await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(trio.serve_tcp, handle, 0, host="127.0.0.1")
        )
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


def dialer(port: int, ident: Identity) -> Peering:
    return Peering(
        local_site="b",
        identity=ident,
        peers=[PeerSpec("a", "127.0.0.1", port, SpiffeId.parse(SERVER_ID))],
        catalog=Watch(Catalog()),
        export_rules=(),
        settings=PeeringSettings(ping_interval=1.0, ping_timeout=1.0, backoff=BACKOFF),
        rng=lambda: DRAW,
    )


def expected_gaps(n: int) -> Sequence[float]:
    return [BACKOFF.delay(i, DRAW) for i in range(n)]


async def test_peer_rejecting_after_handshake_stays_on_the_backoff_schedule(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="isthmus.peering")
    arrivals: list[float] = []
    client = identity(CLIENT_CHAIN, CLIENT_KEY, dict(TRUSTED))
    async with rejecting_peer(arrivals) as port, trio.open_nursery() as nursery:
        peering = dialer(port, client)
        await nursery.start(
            lambda task_status: peering.serve(host="127.0.0.1", port=0, task_status=task_status)
        )
        await trio.sleep(120.0)
        status = peering.status()["a"]
        nursery.cancel_scope.cancel()
    # Delays 0.125, 0.25, 0.5, ... 15 (capped): 14 dials within 120 s.  With the backoff
    # reset on every handshake it would have been one dial per 0.125 s (~960).
    on_schedule = 1 + sum(1 for t in itertools.accumulate(expected_gaps(100)) if t <= 120.0)
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert on_schedule - 1 <= len(arrivals) <= on_schedule, (len(arrivals), arrivals)
    for i, (gap, want) in enumerate(zip(gaps, expected_gaps(len(gaps)), strict=True)):
        assert gap >= want - 1e-6, (i, gap, want)
    assert status["up"] is False and status["failed_attempts"] == len(arrivals)
    assert status["links_established"] == 0
    # The dialer's log says what a link closing right after the handshake likely means.
    warned = [
        r.getMessage() for r in caplog.records if "before it was established" in r.getMessage()
    ]
    assert len(warned) == len(arrivals)
    assert "may reject our certificate" in warned[0] and "valid until" in warned[0]


async def until(predicate: Callable[[], bool], *, within_s: float) -> None:
    """Poll ``predicate`` in virtual time; bounded in count and time."""
    with trio.fail_after(within_s):
        for _ in range(1_000_000):
            if predicate():
                return
            await trio.sleep(0.01)
    raise AssertionError("condition never held")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_both_links_leave_their_slots_and_the_dialer_redials_after_the_peer_goes(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Two gateways that dial each other hold two links; the export runs on one, a task on
    the other waits for its turn.  When the peer goes away, both links must leave their slots
    (the waiting task must not keep a dead link) and the dialer must redial."""
    server_ident = identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED))
    client = identity(CLIENT_CHAIN, CLIENT_KEY, dict(TRUSTED))
    server_port, client_port = free_port(), free_port()

    async def run_server(scope: trio.CancelScope, *, task_status: trio.TaskStatus[int]) -> None:
        peering = Peering(
            local_site="a",
            identity=server_ident,
            peers=[PeerSpec("b", "127.0.0.1", client_port, SpiffeId.parse(CLIENT_ID))],
            catalog=Watch(Catalog()),
            export_rules=(),
            settings=PeeringSettings(ping_interval=1.0, ping_timeout=1.0, backoff=BACKOFF),
            rng=lambda: DRAW,
        )
        with scope:
            await peering.serve(host="127.0.0.1", port=server_port, task_status=task_status)

    async with trio.open_nursery() as nursery:
        first = trio.CancelScope()
        await nursery.start(run_server, first)
        peering = dialer(server_port, client)
        await nursery.start(functools.partial(peering.serve, host="127.0.0.1", port=client_port))

        def links() -> tuple[bool, bool]:
            st = peering.status()["a"]
            return st["dialed_link"], st["accepted_link"]

        await until(lambda: links() == (True, True), within_s=10)
        await trio.sleep(3.0)  # established: PINGs answered
        first.cancel()  # the peer goes away; both links close
        await until(lambda: links() == (False, False), within_s=10)
        await nursery.start(run_server, trio.CancelScope())
        await until(lambda: links() == (True, True), within_s=60)
        status = peering.status()["a"]
        nursery.cancel_scope.cancel()
    assert status["up"] is True


async def test_redial_cuts_the_backoff_short_once(autojump_clock: trio.abc.Clock) -> None:
    """``Peering.redial(site)`` (a worker told by its supervisor that the site is back) makes
    a dial loop waiting out its backoff dial at once; the schedule then goes on as before."""
    arrivals: list[float] = []
    client = identity(CLIENT_CHAIN, CLIENT_KEY, dict(TRUSTED))
    async with rejecting_peer(arrivals) as port, trio.open_nursery() as nursery:
        peering = dialer(port, client)
        await nursery.start(
            lambda task_status: peering.serve(host="127.0.0.1", port=0, task_status=task_status)
        )
        await trio.sleep(60.0)  # the backoff has reached its cap: dials 15 s apart
        before = len(arrivals)
        assert before >= 2 and arrivals[-1] - arrivals[-2] >= 7.5
        asked = trio.current_time()
        peering.redial("a")
        await until(lambda: len(arrivals) > before, within_s=1.0)  # not 15 s later
        assert arrivals[before] - asked < 0.5
        peering.redial("zz")  # no such site: nothing happens
        nursery.cancel_scope.cancel()
