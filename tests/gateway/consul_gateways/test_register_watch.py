"""Registration and the watch, on the Consul-API test server over real loopback sockets.

Two "gateways" of site b keep themselves registered (:func:`keep_registered`); a's watch
(:func:`watch_gateways`) hands peering both replicas, then only one when the other is
cancelled (it deregisters), and none of a third that registered and never heartbeated once
its TTL ran out.  Peering here is a recorder of ``set_peers`` (the real one is exercised by
tests/e2e/test_replicas_consul.py); every wait has a hang guard.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from discovery.backoff import Backoff
from discovery.sources.consul_http import TrioHTTPClient
from foundation.spiffe_id import SpiffeId
from gateway.config.load import load_text
from gateway.consul_gateways.agent import GatewayAgent
from gateway.consul_gateways.directory import PeerDirectory, watch_gateways
from gateway.consul_gateways.meta import registration
from gateway.consul_gateways.register import keep_registered
from overlay.peering.config import PeerSpec
from tests.consul_api.server import ConsulApiServer, open_consul_api_server
from tests.gateway.config.config_kit import GOOD

GUARD_S = 30.0
TOKEN = "s3cret-token-value"
B_ID = SpiffeId.parse("spiffe://gcp-b.isthmus.test/isthmus/gateway/gcp-b")


class Recorder:
    """Stands in for Peering: what set_peers was given, and an event per call."""

    def __init__(self) -> None:
        self.specs: list[PeerSpec] = []
        self.changed = trio.Event()

    async def set_peers(self, specs: Sequence[PeerSpec]) -> tuple[str, ...]:
        self.specs = list(specs)
        self.changed.set()
        self.changed = trio.Event()
        return ()

    def b(self) -> list[str]:
        return sorted(f"{s.host}:{s.port}" for s in self.specs if s.name == "gcp-b")


async def _until(rec: Recorder, want: list[str]) -> None:
    with trio.fail_after(GUARD_S):
        while rec.b() != want:
            await rec.changed.wait()


def _agent(srv: ConsulApiServer, token: str | None = TOKEN) -> GatewayAgent:
    http = TrioHTTPClient(srv.host, srv.port, "http", ssl_context=None)
    return GatewayAgent(http, token=token, dc=None)


def _body(host: str, ttl_s: float) -> dict[str, object]:
    return registration(site="gcp-b", spiffe_id=B_ID, host=host, port=15443, ttl_s=ttl_s)


async def test_replicas_join_and_leave_through_consul(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    config = load_text(
        GOOD
        + f'[[peers]]\nname = "gcp-b"\ndiscover = "consul"\nspiffe_id = "{B_ID}"\n'
        + '[[sources]]\nkind = "consul"\nname = "consul"\naddress = "http://127.0.0.1:1"\n',
        base_dir=Path("/etc/isthmus"),
    )
    backoff = Backoff(base_s=0.05, cap_s=0.2)
    rec = Recorder()
    directory = PeerDirectory()
    async with (
        open_consul_api_server(seed=1, acl_token=TOKEN) as srv,
        trio.open_nursery() as nursery,
    ):
        await nursery.start(
            functools.partial(
                watch_gateways,
                _agent(srv),
                directory,
                rec,  # type: ignore[arg-type]
                lambda: config,
                wait_s=GUARD_S,
                backoff=backoff,
            )
        )
        beats = []
        for host in ("127.0.0.2", "127.0.0.3"):
            scope = trio.CancelScope()
            beats.append(scope)

            async def beat(host: str = host, scope: trio.CancelScope = scope) -> None:
                with scope:
                    await keep_registered(_agent(srv), _body(host, 3.0), ttl_s=3.0, backoff=backoff)

            nursery.start_soon(beat)
        await _until(rec, ["127.0.0.2:15443", "127.0.0.3:15443"])
        assert {s.spiffe_id for s in rec.specs if s.name == "gcp-b"} == {B_ID}
        # One replica shuts down: it deregisters, the other stays.
        beats[0].cancel()
        await _until(rec, ["127.0.0.3:15443"])
        # One registers and never heartbeats: in while its check passes, out at its TTL.
        await _agent(srv).register(_body("127.0.0.4", 3.0))
        await _until(rec, ["127.0.0.3:15443", "127.0.0.4:15443"])
        await _until(rec, ["127.0.0.3:15443"])
        # Consul unreachable: the last answer stays.
        srv.fail_with_500()
        await trio.sleep(0.5)
        assert rec.b() == ["127.0.0.3:15443"]
        srv.fail_with_500(False)
        nursery.cancel_scope.cancel()
    assert TOKEN not in caplog.text
    assert "site gcp-b replicas from Consul: added [], removed ['127.0.0.2:15443']" in caplog.text
