"""EastWestHandler over a real HTTP/2 connection pair on loopback TCP, in front of real
endpoints: what an authenticated peer gateway may and may not do through this site."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial

import pytest
import trio

from discovery.model import Endpoint, ServiceName
from foundation.errors import H2_CANCEL, H2_CONNECT_ERROR
from foundation.spiffe_id import SpiffeId
from gateway.cluster.local import LocalCluster
from gateway.config.model import PolicyConfig
from gateway.demo.services import serve_tcp_echo
from gateway.http.overlay_headers import strip_request
from gateway.http.transcode import h2_request_to_h1
from gateway.inbound.east_west import EastWestHandler
from gateway.inbound.request import parse_request
from gateway.upstream.endpoint_h1 import request_head
from gateway.upstream.pool import UpstreamPool
from overlay.federation.config import ExportConfig
from overlay.h2.connection import H2Connection
from overlay.h2.stream import H2Stream, StreamReset
from tests.gateway.upstream.test_servers import serve_h2_echo, serve_stream_echo, watch_of

PEER = "peer-site"
CALLER = "spiffe://peer.example/ns/default/sa/web"


def ep(name: str, port: int, protocol: str = "http1", **kw: object) -> Endpoint:
    return Endpoint(ServiceName(name), "127.0.0.1", port, protocol=protocol, **kw)  # type: ignore[arg-type]


EXPORTS = (
    ExportConfig(service="api"),
    ExportConfig(service="grpc"),
    ExportConfig(service="db"),
    ExportConfig(service="reset"),
    ExportConfig(service="sink"),
    ExportConfig(service="locked"),
    ExportConfig(service="down"),
    ExportConfig(service="private", peers=("someone-else",)),
)
POLICIES = (
    PolicyConfig(service="api", allow_sites=(PEER,)),
    PolicyConfig(service="grpc", allow_ids=(SpiffeId.parse(CALLER),)),
    PolicyConfig(service="db", allow_sites=("*",)),
    PolicyConfig(service="reset", allow_sites=("*",)),
    PolicyConfig(service="sink", allow_sites=("*",)),
    PolicyConfig(service="down", allow_sites=("*",)),
    PolicyConfig(service="private", allow_sites=("*",)),
)


@dataclass
class Site:
    client: H2Connection
    echo: dict[str, int]
    sink: list[str]


async def _resetting_endpoint(stream: trio.SocketStream) -> None:
    """Reads a little, then aborts the connection with RST."""
    await stream.receive_some(10)
    stream.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    await stream.aclose()


async def _sink_endpoint(seen: list[str], stream: trio.SocketStream) -> None:
    """Reads until the connection ends and records how: ``eof`` or ``reset``."""
    try:
        while await stream.receive_some(65536):
            pass
        seen.append("eof")
    except trio.BrokenResourceError:
        seen.append("reset")
    finally:
        await stream.aclose()


@asynccontextmanager
async def site() -> AsyncIterator[Site]:
    echo: dict[str, int] = {}
    sink: list[str] = []
    h2_stats: dict[str, int] = {}
    async with trio.open_nursery() as nursery:
        api = await nursery.start(serve_stream_echo, echo)
        grpc = await nursery.start(serve_h2_echo, h2_stats)
        db = await nursery.start(serve_tcp_echo, "127.0.0.1", 0, "here")
        resetters = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, _resetting_endpoint, resetters)
        sinks = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, partial(_sink_endpoint, sink), sinks)
        catalog = watch_of(
            ep("api", api),
            ep("grpc", grpc, "http2"),
            ep("db", db, "tcp"),
            ep("reset", resetters[0].socket.getsockname()[1], "tcp"),
            ep("sink", sinks[0].socket.getsockname()[1], "tcp"),
            ep("locked", api),
            ep("private", api),
            ep("down", api, healthy=False),
        )
        pool = UpstreamPool()
        await nursery.start(pool.serve)
        cluster = LocalCluster(local_site="here", catalog=catalog, pool=pool)
        handler = EastWestHandler(
            local_site="here",
            mesh_domain="isthmus",
            cluster=cluster,
            export_rules=EXPORTS,
            policies=POLICIES,
        )
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        a = await trio.open_tcp_stream("127.0.0.1", port)
        b = await listeners[0].accept()
        await listeners[0].aclose()
        client = H2Connection(a, client_side=True, ping_interval=None)
        server = H2Connection(
            b, client_side=False, handler=lambda s: handler(PEER, s), ping_interval=None
        )
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        yield Site(client, echo, sink)
        assert server.close_reason is None, "a stream failure must never take the link down"
        nursery.cancel_scope.cancel()


async def until(predicate: Callable[[], bool]) -> None:
    """Poll a condition, bounded in count and time."""
    for _ in range(500):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("condition not reached in time")


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    trailers: list[tuple[bytes, bytes]]


def get(authority: str = "api.default.isthmus", *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", authority),
        (":path", "/x"),
        *extra,
    ]


async def call(client: H2Connection, headers: list[tuple[str, str]], body: bytes = b"") -> Answer:
    with trio.fail_after(10):
        stream = await client.open_stream(headers, end_stream=not body)
        if body:
            await stream.send_all(body)
            await stream.send_eof()
        raw = await stream.response_headers()
        data = bytearray()
        while chunk := await stream.receive_some():
            data += chunk
        await stream.aclose()
    head = dict(raw)
    return Answer(int(head[b":status"]), head, bytes(data), list(stream.trailers or []))


async def test_allowed_call_reaches_the_endpoint_without_internal_headers() -> None:
    async with site() as s:
        internal = (
            ("isthmus-caller-id", CALLER),
            ("isthmus-caller-site", PEER),
            ("isthmus-deadline-ms", "5000"),
        )
        for authority in ("api.default.isthmus", "api.default.here.isthmus"):
            answer = await call(s.client, get(authority, ("x-app", "1"), *internal))
            assert answer.status == 200
            seen = json.loads(answer.headers[b"x-request-headers"])
            assert ["host", authority] in seen and ["x-app", "1"] in seen
            assert not any(n.startswith("isthmus-") for n, _ in seen)
        post = [*get(), ("content-length", "5")]
        post[0] = (":method", "POST")
        answer = await call(s.client, post, b"hello")
        assert answer.body == b"hello" and (b"x-length", b"5") in answer.trailers


async def test_http2_endpoint_allowed_by_caller_identity() -> None:
    async with site() as s:
        ok = await call(s.client, get("grpc.default.isthmus", ("isthmus-caller-id", CALLER)))
        assert ok.status == 200
        other = "spiffe://peer.example/ns/default/sa/other"
        denied = await call(s.client, get("grpc.default.isthmus", ("isthmus-caller-id", other)))
        assert denied.status == 403


async def test_denied_site_gets_403_with_a_clear_body() -> None:
    async with site() as s:
        # a peer vouches for its own site's callers only, never for another site's
        answer = await call(s.client, get("api.default.isthmus", ("isthmus-caller-site", "evil")))
        assert answer.status == 403
        assert b"'peer-site' may not vouch for callers of 'evil'" in answer.body
        locked = await call(s.client, get("locked.default.isthmus"))
        assert b"'peer-site' may not call locked.default" in locked.body
        assert locked.status == 403
        # a peer cannot claim that its caller is one of ours
        ours = await call(s.client, get("api.default.isthmus", ("isthmus-caller-site", "here")))
        assert ours.status == 403
        assert s.echo["requests"] == 0


@pytest.mark.parametrize(
    ("authority", "status"),
    [
        ("nope.default.isthmus", 404),
        ("api.default.elsewhere.isthmus", 404),
        ("private.default.isthmus", 404),  # exported, but not to this peer
        ("api.default.example.com", 404),
    ],
)
async def test_unknown_or_unavailable_address(authority: str, status: int) -> None:
    async with site() as s:
        answer = await call(s.client, get(authority))
        assert answer.status == status
        assert answer.body.startswith(b"%d " % status)
        assert s.echo["requests"] == 0
        assert (await call(s.client, get())).status == 200  # the link still works


async def test_no_healthy_endpoint_refuses_the_stream_so_the_origin_can_fail_over() -> None:
    """REFUSED_STREAM (RFC 9113 section 8.7) says "no work done": safe to try another site."""
    async with site() as s:
        stream = await s.client.open_stream(get("down.default.isthmus"), end_stream=True)
        with pytest.raises(StreamReset) as info:
            await stream.response_headers()
        assert info.value.refused
        assert s.echo["requests"] == 0
        assert (await call(s.client, get())).status == 200  # the link still works


@pytest.mark.parametrize(
    "headers",
    [
        get("api.default.isthmus", ("isthmus-caller-id", "spiffe://UPPER/x")),
        get("api.default.isthmus", ("isthmus-deadline-ms", "-1")),
        get("api.default.isthmus", ("isthmus-caller-site", "Not A Label")),
        [(":method", "G" * 65), (":scheme", "http"), (":authority", "api.default.isthmus"),
         (":path", "/")],
        [(":method", "GET"), (":scheme", "http"), (":authority", "api.default.isthmus"),
         (":path", "/" + "a" * 20000)],
        [(":method", "GET"), (":scheme", "http"), (":authority", "api.default.isthmus"),
         (":path", "/a b")],
        [(":method", "GET"), (":scheme", "ftp"), (":authority", "api.default.isthmus"),
         (":path", "/")],
        [(":method", "GET"), (":scheme", "http"), (":authority", "api.default.isthmus"),
         (":path", "relative")],
    ],
)  # fmt: skip
async def test_malformed_header_block_is_refused(headers: list[tuple[str, str]]) -> None:
    async with site() as s:
        try:
            answer = await call(s.client, headers)
        except StreamReset:
            pass  # refusing by reset is fine too
        else:
            assert answer.status == 400
        assert s.echo["requests"] == 0
        assert (await call(s.client, get())).status == 200


async def test_endpoint_reset_gives_502() -> None:
    async with site() as s:
        headers = get("grpc.default.isthmus", ("isthmus-caller-id", CALLER))
        headers[3] = (":path", "/reset")
        answer = await call(s.client, headers)
        assert answer.status == 502 and b"reset" in answer.body


async def test_deadline_header_gives_504() -> None:
    async with site() as s:
        slow = get("grpc.default.isthmus", ("isthmus-caller-id", CALLER))
        slow[3] = (":path", "/slow")
        # /slow answers after an hour: the 504 can only come from the 300 ms deadline.  The
        # guard (a wide multiple of it) only turns a hang into a failure.
        with trio.fail_after(30 * 0.3):
            answer = await call(s.client, [*slow, ("isthmus-deadline-ms", "300")])
        assert answer.status == 504


async def _connect(client: H2Connection, authority: str) -> H2Stream:
    stream = await client.open_stream([(":method", "CONNECT"), (":authority", authority)])
    raw = dict(await stream.response_headers())
    assert raw[b":status"] == b"200"
    return stream


async def test_connect_tunnel_to_tcp_echo_with_half_close() -> None:
    async with site() as s:
        with trio.fail_after(10):
            stream = await _connect(s.client, "db.default.isthmus:5432")
            await stream.send_all(b"hello ")
            await stream.send_all(b"tunnel")
            await stream.send_eof()  # half-close: the echo still answers, then ends
            data = b""
            while chunk := await stream.receive_some():
                data += chunk
            assert data == b"hello tunnel"
            await stream.aclose()
        refused = await call(
            s.client, [(":method", "CONNECT"), (":authority", "nope.default.isthmus:1")]
        )
        assert refused.status == 404


async def test_tcp_reset_resets_the_tunnel() -> None:
    async with site() as s:
        with trio.fail_after(10):
            stream = await _connect(s.client, "reset.default.isthmus:1")
            await stream.send_all(b"0123456789abcdef")
            with pytest.raises(StreamReset) as info:
                while await stream.receive_some():
                    pass
            assert info.value.error_code == H2_CONNECT_ERROR


async def test_stream_reset_resets_the_tcp_connection() -> None:
    async with site() as s:
        with trio.fail_after(10):
            stream = await _connect(s.client, "sink.default.isthmus:9")
            await stream.send_all(b"some bytes")
            stream.reset(H2_CANCEL)
            await until(lambda: len(s.sink) >= 1)
        assert s.sink == ["reset"]
        # and a clean end of the tunnel is a clean close
        with trio.fail_after(10):
            stream = await _connect(s.client, "sink.default.isthmus:9")
            await stream.send_all(b"more")
            await stream.send_eof()
            await until(lambda: len(s.sink) >= 2)
        assert s.sink == ["reset", "eof"]


@pytest.mark.parametrize(
    "block",
    [
        [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"api.default.isthmus"),
         (b":path", b"/x?y=1"), (b"isthmus-caller-site", b"peer-site"), (b"accept", b"*/*"),
         (b"isthmus-deadline-ms", b"5000"), (b"cookie", b"a=1"), (b"cookie", b"b=2")],
        [(b":method", b"POST"), (b":scheme", b"https"),
         (b":authority", b"api.default.isthmus:8443"), (b":path", b"/"),
         (b"content-length", b"5"), (b"te", b"trailers"),
         (b"host", b"api.default.isthmus:8443")],
        [(b":method", b"OPTIONS"), (b":scheme", b"http"), (b":path", b"*"),
         (b"host", b"api.default.isthmus"), (b"isthmus-caller-id", CALLER.encode())],
    ],
)  # fmt: skip
def test_the_destination_validates_a_request_once_with_the_same_result(
    block: list[tuple[bytes, bytes]],
) -> None:
    """The head an HTTP/1.1 endpoint gets is the one parse_request derived (no second pass),
    and it is exactly what deriving it again from the request would give."""
    request = parse_request(block)
    assert request.h1_head is not None
    assert request_head(request) is request.h1_head
    assert request.h1_head == h2_request_to_h1(strip_request(request).h2_headers())
    assert not any(n.startswith(b"isthmus-") for n, _ in request.h1_head.headers)
