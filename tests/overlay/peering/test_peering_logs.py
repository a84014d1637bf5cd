"""What peers see and what the log says, over real TLS 1.3 between two Peerings on loopback
addresses 127.0.0.2 and 127.0.0.3 (autojump clock where time matters).

* a gateway dials from its east-west address, so the peer sees the site's address as source;
* an inbound link, accepted or rejected, is logged with the peer's site name;
* rejections are logged once per cause per minute, with a count of the suppressed ones.
"""

from __future__ import annotations

import functools
import logging
import socket
from collections.abc import Callable

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
DIALER_HOST, SERVER_HOST = "127.0.0.2", "127.0.0.3"


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


async def until(predicate: Callable[[], bool], *, within_s: float) -> None:
    with trio.fail_after(within_s):
        for _ in range(1_000_000):
            if predicate():
                return
            await trio.sleep(0.01)
    raise AssertionError("condition never held")


def peerings(server_ident: Identity, server_port: int) -> tuple[Peering, Peering]:
    settings = PeeringSettings(
        ping_interval=1.0, ping_timeout=1.0, backoff=Backoff(base_s=0.25, cap_s=30.0)
    )
    server = Peering(
        local_site="srv",
        identity=server_ident,
        peers=[PeerSpec("cli", DIALER_HOST, 1, SpiffeId.parse(CLIENT_ID), dial=False)],
        catalog=Watch(Catalog()),
        export_rules=(),
        settings=settings,
    )
    client = Peering(
        local_site="cli",
        identity=identity(CLIENT_CHAIN, CLIENT_KEY, dict(TRUSTED)),
        peers=[PeerSpec("srv", SERVER_HOST, server_port, SpiffeId.parse(SERVER_ID))],
        catalog=Watch(Catalog()),
        export_rules=(),
        settings=settings,
        rng=lambda: 0.5,
    )
    return server, client


async def test_peer_sees_the_dialer_s_site_address_and_logs_the_site(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="isthmus.peering")
    port = free_port(SERVER_HOST)
    server, client = peerings(identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED)), port)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(server.serve, host=SERVER_HOST, port=port))
        await nursery.start(functools.partial(client.serve, host=DIALER_HOST, port=0))
        await until(lambda: server.status()["cli"]["up"], within_s=10)
        accepted_from = server.status()["cli"]["accepted_from"]
        nursery.cancel_scope.cancel()
    assert accepted_from.startswith(f"{DIALER_HOST}:"), accepted_from
    up = [r.getMessage() for r in caplog.records if "link from cli is up" in r.getMessage()]
    assert up and f"{DIALER_HOST}:" in up[0] and CLIENT_ID in up[0]


async def test_rejections_name_the_site_and_are_rate_limited_per_cause(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    """The server's bundle of b.test was removed: it rejects the dialer's certificate on every
    dial (14 dials in 120 s on the dialer's backoff schedule), but logs it once per minute."""
    caplog.set_level(logging.WARNING, logger="isthmus.link")
    port = free_port(SERVER_HOST)
    untrusting = identity(SERVER_CHAIN, SERVER_KEY, {"a.test": (CA_A.cert,)})
    server, client = peerings(untrusting, port)
    async with trio.open_nursery() as nursery:
        await nursery.start(functools.partial(server.serve, host=SERVER_HOST, port=port))
        await nursery.start(functools.partial(client.serve, host=DIALER_HOST, port=0))
        await trio.sleep(120.0)
        dials = client.status()["srv"]["failed_attempts"]
        nursery.cancel_scope.cancel()
    lines = [r.getMessage() for r in caplog.records if "rejected inbound link" in r.getMessage()]
    assert dials >= 10
    assert len(lines) == 2, lines  # t = 0 and the first dial 60 s or more later
    for line in lines:
        assert f"from site cli ({DIALER_HOST}:" in line, line
    assert "more like this suppressed" not in lines[0]
    assert "more like this suppressed since the last such line" in lines[1], lines[1]
