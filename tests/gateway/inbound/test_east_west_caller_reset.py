"""A reset the origin forwards for its caller is the caller's doing, never the endpoint's.

The link is real HTTP/2 (this site's ``H2Connection`` with the real east-west handler, local
cluster and outlier detector); the endpoint is a real HTTP/1.1 server on loopback that holds
``/hold`` open (like a slow answer) and answers anything else.  The origin's side is a raw
python-hyper ``h2`` client over an in-memory stream, so that a stream's HEADERS and its
RST_STREAM arrive in one read -- as they do when a gateway forwards a caller's rapid reset
under load -- and the handler starts on a stream that is already reset.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import h2.config
import h2.connection
import h2.events
import trio
import trio.testing

from discovery.model import Endpoint, ServiceName
from foundation.errors import H2_CANCEL
from gateway.cluster.local import LocalCluster
from gateway.cluster.outlier import OutlierPolicy
from gateway.cluster.outlier_detector import OutlierDetector
from gateway.config.model import PolicyConfig
from gateway.inbound.east_west import EastWestHandler
from gateway.upstream.pool import UpstreamPool
from overlay.federation.config import ExportConfig
from overlay.h2.connection import H2Connection
from tests.gateway.upstream.upstream_kit import watch_of

SERVICE = ServiceName("slow", "default")
POLICY = OutlierPolicy(consecutive_5xx=3, consecutive_connect_failures=3, max_ejected_percent=100)
RESETS = 3 * POLICY.consecutive_5xx  # well over the threshold
HANG_GUARD_S = 30.0


async def _endpoint(
    held: trio.MemorySendChannel[trio.SocketStream],
    paths: list[bytes],
    stream: trio.SocketStream,
) -> None:
    """HTTP/1.1: ``/hold`` is kept open (never answered; told on ``held``), anything else
    is ``200 ok``; ``paths`` lists the connections it took (``b""``) and the requests."""
    paths.append(b"")
    head = b""
    with trio.move_on_after(HANG_GUARD_S):
        while b"\r\n\r\n" not in head and len(head) < 65536:
            data = await stream.receive_some(65536)
            if not data:
                return
            head += data
        path = head.split(b" ", 2)[1]
        paths.append(path)
        if path == b"/hold":
            await held.send(stream)
            await trio.sleep_forever()
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
    await stream.aclose()


@dataclass
class Site:
    cluster: LocalCluster
    server: H2Connection
    endpoint: Endpoint
    held: trio.MemoryReceiveChannel[trio.SocketStream]
    paths: list[bytes]


@asynccontextmanager
async def _site(
    link: trio.abc.Stream,
) -> AsyncIterator[Site]:
    held_in, held = trio.open_memory_channel[trio.SocketStream](RESETS)
    paths: list[bytes] = []
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, partial(_endpoint, held_in, paths), listeners)
        endpoint = Endpoint(SERVICE, "127.0.0.1", listeners[0].socket.getsockname()[1])
        pool = UpstreamPool()
        await nursery.start(pool.serve)
        detector = OutlierDetector(lambda _svc: POLICY)
        cluster = LocalCluster(
            local_site="here", catalog=watch_of(endpoint), pool=pool, outlier=detector
        )
        handler = EastWestHandler(
            local_site="here",
            mesh_domain="isthmus",
            cluster=cluster,
            export_rules=(ExportConfig(service="slow"),),
            policies=(PolicyConfig(service="slow", allow_sites=("*",)),),
        )
        server = H2Connection(
            link, client_side=False, handler=lambda s: handler("origin", s), ping_interval=None
        )
        await nursery.start(server.serve)
        yield Site(cluster, server, endpoint, held, paths)
        assert server.close_reason is None, "a forwarded reset must never take the link down"
        nursery.cancel_scope.cancel()


class Origin:
    """The origin gateway's end of the link: a raw h2 client (frames written as we say)."""

    def __init__(self, link: trio.abc.Stream) -> None:
        self.link = link
        self.h2 = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.answers: dict[int, list[h2.events.Event]] = {}
        self.ended: dict[int, trio.Event] = {}
        self._sending = trio.Lock()

    async def _flush(self) -> None:
        """Write what h2 has to send, in one write (one task writes at a time)."""
        async with self._sending:
            if out := self.h2.data_to_send():
                await self.link.send_all(out)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.h2.initiate_connection()
        await self._flush()
        task_status.started()
        while data := await self.link.receive_some(65536):
            for event in self.h2.receive_data(data):
                sid = getattr(event, "stream_id", None)
                if sid:
                    self.answers.setdefault(sid, []).append(event)
                if sid and isinstance(event, (h2.events.StreamEnded, h2.events.StreamReset)):
                    self.ended.setdefault(sid, trio.Event()).set()
            await self._flush()

    def _headers(self, path: bytes) -> list[tuple[bytes, bytes]]:
        return [
            (b":method", b"GET"),
            (b":scheme", b"http"),
            (b":authority", b"slow.default.isthmus"),
            (b":path", path),
        ]

    async def open(self, path: bytes, *, reset_at_once: bool) -> int:
        """Open a ``GET path`` (END_STREAM, as a gateway forwards a body-less GET); with
        ``reset_at_once`` its RST_STREAM CANCEL goes out in the same write."""
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, self._headers(path), end_stream=True)
        if reset_at_once:
            self.h2.reset_stream(sid, H2_CANCEL)
        await self._flush()
        return sid

    async def reset(self, sid: int) -> None:
        self.h2.reset_stream(sid, H2_CANCEL)
        await self._flush()

    async def status_of(self, sid: int) -> bytes | None:
        """The ``:status`` the site answered on ``sid`` (None: it reset the stream)."""
        await self.ended.setdefault(sid, trio.Event()).wait()
        for event in self.answers.get(sid, []):
            if isinstance(event, h2.events.ResponseReceived):
                return dict(event.headers).get(b":status")
        return None


async def _settle(server: H2Connection) -> None:
    """Until every handler of a reset stream has ended (bounded by the test's hang guard)."""
    for _ in range(int(HANG_GUARD_S * 100)):
        if not server.statistics().handlers_running:
            return
        await trio.sleep(0.01)


@asynccontextmanager
async def _link() -> AsyncIterator[tuple[Site, Origin]]:
    origin_end, site_end = trio.testing.memory_stream_pair()
    async with _site(site_end) as s, trio.open_nursery() as nursery:
        origin = Origin(origin_end)
        await nursery.start(origin.run)
        yield s, origin
        nursery.cancel_scope.cancel()


async def test_resets_that_arrive_with_their_request_are_not_charged_to_the_endpoint() -> None:
    with trio.fail_after(HANG_GUARD_S):
        async with _link() as (s, origin):
            for _ in range(RESETS):
                await origin.open(b"/hold", reset_at_once=True)
            await _settle(s.server)
            assert s.cluster.outlier.health(s.endpoint.key) is None
            assert s.cluster.endpoints(SERVICE) == (s.endpoint,)
            # ... so the next request of another caller is answered, not refused.
            assert await origin.status_of(await origin.open(b"/", reset_at_once=False)) == b"200"


async def test_resets_while_the_endpoint_is_answering_are_not_charged_to_it() -> None:
    with trio.fail_after(HANG_GUARD_S):
        async with _link() as (s, origin):
            for _ in range(RESETS):
                sid = await origin.open(b"/hold", reset_at_once=False)
                await s.held.receive()  # the endpoint has the request: it is answering
                await origin.reset(sid)
            await _settle(s.server)
            assert s.cluster.outlier.health(s.endpoint.key) is None
            assert await origin.status_of(await origin.open(b"/", reset_at_once=False)) == b"200"


async def test_a_request_reset_before_its_handler_ran_is_not_forwarded() -> None:
    """The reset cancels the handler before it starts: the endpoint never gets the request
    (no work for nobody), and the site keeps serving the next one."""
    with trio.fail_after(HANG_GUARD_S):
        async with _link() as (s, origin):
            for _ in range(RESETS):
                await origin.open(b"/hold", reset_at_once=True)
            await _settle(s.server)
            assert s.paths == []  # not even a connection to the endpoint
            assert s.server.statistics().open_streams == 0
            assert await origin.status_of(await origin.open(b"/", reset_at_once=False)) == b"200"
            assert s.paths == [b"", b"/"]
