"""A caller that goes away while a real endpoint answers costs the endpoint nothing.

Real endpoint on loopback (answers 200), real local cluster and outlier detector; the
caller's writer is one whose connection is gone (it raises what a closed trio socket
raises).  Each such exchange ends with :class:`CallerGone` -- a caller fault, no
``UpstreamError`` -- and outlier detection never hears of it.
"""

from __future__ import annotations

import pytest
import trio

from foundation.errors import DownstreamError, UpstreamError
from gateway.cluster.local import LocalCluster
from gateway.cluster.outlier import OutlierPolicy
from gateway.cluster.outlier_detector import OutlierDetector
from gateway.demo.services import serve_http_echo
from gateway.http.caller_side import CallerGone
from gateway.http.exchange import CallContext, EmptyBody, Request, Response
from gateway.http.message import Headers
from gateway.upstream.pool import UpstreamPool
from tests.gateway.upstream.upstream_kit import SVC, endpoint, watch_of

POLICY = OutlierPolicy(consecutive_5xx=3, consecutive_connect_failures=3, max_ejected_percent=100)


class GoneWriter:
    """The writer of a caller whose connection closed: every write fails."""

    head_sent = False

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None:
        await trio.lowlevel.checkpoint()
        raise trio.BrokenResourceError("the caller closed its connection")

    async def send_data(self, data: bytes) -> None:
        raise trio.BrokenResourceError("the caller closed its connection")

    async def send_end(self, trailers: Headers = ()) -> None:
        raise trio.BrokenResourceError("the caller closed its connection")

    async def send_whole(self, response: Response, body: bytes, trailers: Headers = ()) -> None:
        await self.send_head(response)


async def test_a_caller_gone_while_the_endpoint_answers_is_not_charged_to_it() -> None:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(serve_http_echo, "127.0.0.1", 0, "here")
        pool = UpstreamPool()
        await nursery.start(pool.serve)
        cluster = LocalCluster(
            local_site="here",
            catalog=watch_of(endpoint(port)),
            pool=pool,
            outlier=OutlierDetector(lambda _svc: POLICY),
        )
        request = Request(b"GET", b"http", b"api.default.isthmus", b"/", ())
        for _ in range(3 * POLICY.consecutive_5xx):
            ctx = CallContext("here", None, trio.current_time() + 30)
            with pytest.raises(CallerGone) as caught:
                await cluster.forward(request, EmptyBody(), GoneWriter(), ctx, service=SVC)
            assert isinstance(caught.value, DownstreamError)
            assert not isinstance(caught.value, UpstreamError)
        assert cluster.outlier.health(endpoint(port).key) is None
        assert cluster.endpoints(SVC) == (endpoint(port),)
        nursery.cancel_scope.cancel()
