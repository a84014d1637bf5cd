"""A caller that goes away while a real endpoint answers costs the endpoint nothing.

Real endpoint on loopback (answers 200), real local cluster and outlier detector; the
caller's side is gone: its request body is a reset HTTP/2 stream (it raises what
``H2Stream`` raises then), or its writer's connection is closed (it raises what a closed
trio socket raises).  Each such exchange ends with :class:`CallerGone` -- a caller fault,
no ``UpstreamError`` -- and outlier detection never hears of it.
"""

from __future__ import annotations

import pytest
import trio

from foundation.errors import H2_CANCEL, DownstreamError, UpstreamError
from gateway.cluster.local import LocalCluster
from gateway.cluster.outlier import OutlierPolicy
from gateway.cluster.outlier_detector import OutlierDetector
from gateway.demo.services import serve_http_echo
from gateway.http.caller_side import CallerGone
from gateway.http.exchange import CallContext, EmptyBody, Request, Response
from gateway.http.message import Headers
from gateway.upstream.pool import UpstreamPool
from overlay.h2.stream import StreamReset
from tests.gateway.upstream.upstream_kit import SVC, RecordingWriter, endpoint, watch_of

POLICY = OutlierPolicy(consecutive_5xx=3, consecutive_connect_failures=3, max_ejected_percent=100)


class ResetBody:
    """The request body of a caller that reset its HTTP/2 stream (or whose origin gateway
    forwarded that reset over the link)."""

    trailers: Headers = ()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        raise StreamReset(H2_CANCEL, remote=True)


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


@pytest.mark.parametrize("gone", ["body reset", "writer closed"])
async def test_a_caller_gone_while_the_endpoint_answers_is_not_charged_to_it(gone: str) -> None:
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
        failures: list[Exception] = []
        for _ in range(3 * POLICY.consecutive_5xx):
            ctx = CallContext("here", None, trio.current_time() + 30)
            try:
                if gone == "body reset":
                    await cluster.forward(request, ResetBody(), RecordingWriter(), ctx, service=SVC)
                else:
                    await cluster.forward(request, EmptyBody(), GoneWriter(), ctx, service=SVC)
            except Exception as exc:  # which one: asserted below
                failures.append(exc)
        assert cluster.outlier.health(endpoint(port).key) is None
        assert cluster.endpoints(SVC) == (endpoint(port),)
        # A caller fault, typed as one: nothing that handles upstream failures takes it.
        assert len(failures) == 3 * POLICY.consecutive_5xx
        assert all(isinstance(f, CallerGone) for f in failures), failures
        assert all(isinstance(f, DownstreamError) for f in failures)
        assert not any(isinstance(f, UpstreamError) for f in failures)
        nursery.cancel_scope.cancel()
