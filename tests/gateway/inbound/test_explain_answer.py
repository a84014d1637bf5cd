"""The destination's answer to an explain question, over a real HTTP/2 link into a real
east-west handler: its verdict and the endpoint it would choose, and nothing is sent."""

from __future__ import annotations

import pytest
import trio

from foundation.spiffe_id import SpiffeId
from gateway.http.exchange import CallContext, Request
from gateway.router.explain_run import ask_peer
from overlay.h2.connection import H2Connection
from tests.gateway.inbound.inbound_kit import CALLER, PEER, site


def _question(authority: str) -> Request:
    return Request(b"GET", b"http", authority.encode(), b"/x", ((b"authorization", b"s3cr3t"),))


def _ctx(caller_id: str | None = None) -> CallContext:
    sid = None if caller_id is None else SpiffeId.parse(caller_id)
    return CallContext(PEER, sid, trio.current_time() + 10)


@pytest.mark.parametrize(
    ("service", "status", "policy", "fails_over"),
    [
        ("api", 200, "allowed", False),
        ("locked", 403, "denied", False),  # exported, but no policy lets the peer call it
        ("private", 404, "not reached", False),  # not exported to this peer
        ("down", 503, "allowed", True),  # no healthy endpoint: the origin would move on
    ],
)
async def test_the_destination_answers_with_its_verdict(
    service: str, status: int, policy: str, fails_over: bool
) -> None:
    async with site() as s:
        before = dict(s.echo)
        probe = await ask_peer(
            s.client, "here", _question(f"{service}.default.isthmus"), _ctx(), local_site=PEER
        )
        assert probe.answered and probe.link == "up"
        assert (probe.status, probe.policy, probe.fails_over) == (status, policy, fails_over)
        assert (probe.endpoint is not None) == (status == 200)
        if probe.endpoint is not None:
            assert probe.endpoint.address == "127.0.0.1"
            assert probe.endpoint.balancer == "weighted_round_robin"
        assert s.echo == before  # nothing reached the endpoint
        assert "s3cr3t" not in probe.reason


async def test_the_callers_identity_is_what_the_policy_reads() -> None:
    async with site() as s:
        q = _question("grpc.default.isthmus")
        denied = await ask_peer(s.client, "here", q, _ctx(), local_site=PEER)
        allowed = await ask_peer(s.client, "here", q, _ctx(CALLER), local_site=PEER)
        assert denied.policy == "denied" and allowed.policy == "allowed"
        assert allowed.endpoint is not None and allowed.endpoint.protocol == "http2"


async def test_a_peer_that_does_not_answer_in_time_is_shown_as_such(autojump_clock: object) -> None:
    async def never(stream: object) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        a, b = trio.testing.memory_stream_pair()
        client = H2Connection(a, client_side=True, ping_interval=None)
        server = H2Connection(b, client_side=False, handler=never, ping_interval=None)
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        probe = await ask_peer(
            client, "slow", _question("api.default.isthmus"), _ctx(), local_site=PEER, timeout=5
        )
        assert not probe.answered and "no answer within 5s" in probe.reason
        nursery.cancel_scope.cancel()
