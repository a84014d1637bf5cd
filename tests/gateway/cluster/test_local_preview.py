"""``LocalCluster.preview``: the endpoint the next request would get, and nothing moves."""

from __future__ import annotations

import pytest
import trio

from discovery.model import ServiceName
from gateway.cluster.balancer import BalancerChoice
from gateway.cluster.local import LocalCluster, NoHealthyEndpoint
from gateway.demo.services import serve_http_echo
from gateway.http.exchange import CallContext, EmptyBody, Request
from gateway.upstream.pool import UpstreamPool
from tests.gateway.upstream.upstream_kit import SVC, RecordingWriter, endpoint, watch_of

REQ = Request(b"GET", b"http", b"api.default.isthmus", b"/", ())


async def test_preview_names_the_next_pick_and_does_not_advance_round_robin() -> None:
    async with trio.open_nursery() as nursery:
        ports = [await nursery.start(serve_http_echo, "127.0.0.1", 0, f"e{i}") for i in range(3)]
        pool = UpstreamPool()
        await nursery.start(pool.serve)
        cluster = LocalCluster(
            local_site="here", catalog=watch_of(*(endpoint(p) for p in ports)), pool=pool
        )
        for _ in range(4):
            preview = cluster.preview(SVC, request=REQ)
            assert preview == cluster.preview(SVC, request=REQ)  # previews do not move it
            writer = RecordingWriter()
            ctx = CallContext("here", None, trio.current_time() + 10)
            await cluster.forward(REQ, EmptyBody(), writer, ctx, service=SVC)
            assert writer.json()["site"] == f"e{ports.index(preview[0].port)}"
        nursery.cancel_scope.cancel()


async def test_preview_raises_what_forward_would_and_names_the_balancer() -> None:
    def ring(_s: ServiceName) -> BalancerChoice:
        return BalancerChoice("ring_hash", hash_header=b"x-user")

    cluster = LocalCluster(
        local_site="here", catalog=watch_of(), pool=UpstreamPool(), balancer_for=ring
    )
    with pytest.raises(NoHealthyEndpoint):
        cluster.preview(SVC)
    assert cluster.balancer_kind(SVC) == "ring_hash"
