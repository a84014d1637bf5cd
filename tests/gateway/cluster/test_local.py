"""LocalCluster end to end against real HTTP/1.1, HTTP/2 and TCP endpoints on loopback."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio

from discovery.model import Endpoint
from gateway.cluster.local import (
    LocalCluster,
    NoHealthyEndpoint,
    ProtocolMismatch,
    UpstreamTimeout,
)
from gateway.demo.services import serve_http_echo, serve_tcp_echo
from gateway.http.errors import MalformedHeaders, UpstreamClosed
from gateway.http.exchange import CallContext, EmptyBody, Request
from gateway.http.h1_server import H1ServerConnection
from gateway.http.message import ResponseHead
from gateway.upstream.pool import EndpointConnectFailed, UpstreamPool, UpstreamUnavailable
from overlay.h2.connection import H2Connection
from overlay.h2.stream import ConnectionGone, H2Stream
from tests.gateway.upstream.upstream_kit import (
    SVC,
    BytesBody,
    PatternBody,
    RecordingWriter,
    endpoint,
    header_pairs,
    refused_port,
    serve_h2_echo,
    serve_stale,
    serve_stream_echo,
    watch_of,
)

AUTHORITY = b"api.default.isthmus"
INTERNAL = (
    (b"isthmus-caller-id", b"spiffe://east.example/ns/default/sa/web"),
    (b"isthmus-caller-site", b"east"),
    (b"isthmus-deadline-ms", b"900"),
)


def request(method: bytes = b"GET", path: bytes = b"/hello", headers: tuple = ()) -> Request:  # type: ignore[type-arg]
    return Request(method, b"http", AUTHORITY, path, ((b"x-app", b"1"), *INTERNAL, *headers))


def ctx(seconds: float = 10.0) -> CallContext:
    return CallContext("here", None, trio.current_time() + seconds)


@asynccontextmanager
async def cluster_of(
    *endpoints: Endpoint, **pool_kw: float
) -> AsyncIterator[tuple[LocalCluster, UpstreamPool]]:
    async with trio.open_nursery() as nursery:
        pool = UpstreamPool(**pool_kw)  # type: ignore[arg-type]
        await nursery.start(pool.serve)
        yield LocalCluster(local_site="here", catalog=watch_of(*endpoints), pool=pool), pool
        nursery.cancel_scope.cancel()


async def get(cluster: LocalCluster, req: Request | None = None, **kw: object) -> RecordingWriter:
    writer = RecordingWriter()
    await cluster.forward(req or request(), EmptyBody(), writer, ctx(), service=SVC, **kw)  # type: ignore[arg-type]
    return writer


async def test_round_robin_across_http1_endpoints_strips_internal_headers() -> None:
    async with trio.open_nursery() as servers:
        ports = [await servers.start(serve_http_echo, "127.0.0.1", 0, f"e{i}") for i in range(3)]
        async with cluster_of(*(endpoint(p) for p in ports)) as (cluster, pool):
            sites = []
            for _ in range(6):
                writer = await get(cluster)
                assert writer.status == 200
                doc = writer.json()
                sites.append(doc["site"])
                names = {n for n, _ in doc["headers"]}  # type: ignore[attr-defined]
                assert not any(n.startswith("isthmus-") for n in names)
                assert ["host", "api.default.isthmus"] in doc["headers"]  # type: ignore[operator]
                assert ["x-app", "1"] in doc["headers"]  # type: ignore[operator]
            assert sorted(sites) == ["e0", "e0", "e1", "e1", "e2", "e2"]
            assert len(set(sites[:3])) == 3  # one full cycle visits each endpoint once
            assert pool.statistics().dialed == 3  # keep-alive: one connection per endpoint
        servers.cancel_scope.cancel()


async def test_endpoint_weights_split_traffic_nine_to_one() -> None:
    async with trio.open_nursery() as servers:
        heavy = await servers.start(serve_http_echo, "127.0.0.1", 0, "heavy")
        light = await servers.start(serve_http_echo, "127.0.0.1", 0, "light")
        eps = (endpoint(heavy, weight=9), endpoint(light, weight=1))
        async with cluster_of(*eps) as (cluster, _pool):
            sites = [(await get(cluster)).json()["site"] for _ in range(20)]
            assert sites.count("heavy") == 18 and sites.count("light") == 2
            assert "light" in sites[:10] and "light" in sites[10:]  # interleaved, not a burst
        servers.cancel_scope.cancel()


async def test_http2_endpoint_gets_stripped_headers_and_trailers_both_ways() -> None:
    stats: dict[str, int] = {}
    async with trio.open_nursery() as servers:
        port = await servers.start(serve_h2_echo, stats)
        async with cluster_of(endpoint(port, "http2")) as (cluster, _pool):
            body = BytesBody(b"ping", trailers=((b"grpc-status", b"0"),))
            writer = RecordingWriter()
            req = request(b"POST", b"/rpc", ((b"te", b"trailers"),))
            await cluster.forward(req, body, writer, ctx(), service=SVC)
            assert writer.status == 200 and bytes(writer.body) == b"ping"
            seen = header_pairs(writer.header(b"x-request-headers"))
            assert not any(n.startswith("isthmus-") for n, _ in seen)
            assert (":authority", "api.default.isthmus") in seen and ("te", "trailers") in seen
            assert writer.trailers == ((b"grpc-status", b"0"), (b"x-length", b"4"))
            for _ in range(3):
                assert (await get(cluster)).status == 200
            assert stats["connections"] == 1  # one multiplexed connection
        servers.cancel_scope.cancel()


@pytest.mark.parametrize("protocol", ["http1", "http2"])
async def test_10_mib_streams_both_ways_with_bounded_memory(protocol: str) -> None:
    size = 10 * 1024 * 1024
    stats: dict[str, int] = {}
    serve = serve_h2_echo if protocol == "http2" else serve_stream_echo
    async with trio.open_nursery() as servers:
        port = await servers.start(serve, stats)
        async with cluster_of(endpoint(port, protocol)) as (cluster, _pool):  # type: ignore[arg-type]
            writer = RecordingWriter(keep=False)
            body = PatternBody(size)
            tracemalloc.start()
            try:
                with trio.fail_after(30):
                    await cluster.forward(
                        request(b"POST", b"/upload"), body, writer, ctx(30), service=SVC
                    )
                _current, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert writer.status == 200 and writer.length == size
            assert writer.trailers is not None and (b"x-length", b"%d" % size) in writer.trailers
            # Both directions stream through the gateway, the test's endpoint and its client
            # in one process: far less than one copy of the body may be alive at any time.
            assert peak < 3 * 1024 * 1024, f"peak traced memory {peak} bytes"
        servers.cancel_scope.cancel()


async def test_stale_pooled_connection_is_retried_once_on_a_new_one() -> None:
    stats: dict[str, int] = {}
    async with trio.open_nursery() as servers:
        port = await servers.start(serve_stale, stats)
        async with cluster_of(endpoint(port)) as (cluster, pool):
            first = await get(cluster)
            second = await get(cluster)  # pooled connection: the backend drops it
            assert bytes(first.body) == bytes(second.body) == b"fresh"
            assert stats == {"connections": 2, "answered": 2, "dropped": 1}
            assert pool.statistics().reused == 1
        servers.cancel_scope.cancel()


async def test_stale_connection_is_not_retried_for_a_non_idempotent_request() -> None:
    stats: dict[str, int] = {}
    async with trio.open_nursery() as servers:
        port = await servers.start(serve_stale, stats)
        async with cluster_of(endpoint(port)) as (cluster, _pool):
            await get(cluster)
            writer = RecordingWriter()
            with pytest.raises(UpstreamClosed) as info:
                await cluster.forward(
                    request(b"POST", b"/order"), BytesBody(b"one order"), writer, ctx(),
                    service=SVC,
                )  # fmt: skip
            assert info.value.http_status == 502 and not writer.head_sent
            assert stats["connections"] == 1 and stats["dropped"] == 1
        servers.cancel_scope.cancel()


async def test_pooled_connections_idle_past_the_timeout_are_dropped() -> None:
    async with trio.open_nursery() as servers:
        port = await servers.start(serve_http_echo, "127.0.0.1", 0, "e")
        async with cluster_of(endpoint(port), idle_timeout=0.2) as (cluster, pool):
            await get(cluster)
            assert pool.statistics().idle_h1 == 1
            for _ in range(100):  # bounded: 5 s at most
                if not pool.statistics().idle_h1:
                    break
                await trio.sleep(0.05)
            assert pool.statistics().reaped == 1
            await get(cluster)
            assert pool.statistics().dialed == 2 and pool.statistics().reused == 0
        servers.cancel_scope.cancel()


async def test_backend_closed_idle_connection_is_not_used() -> None:
    """A pooled connection the backend already closed is noticed before use (no retry needed,
    even for a POST)."""
    async with trio.open_nursery() as servers:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]

        async def one_then_close(stream: trio.SocketStream) -> None:
            data = b""
            while b"\r\n\r\n" not in data:
                data += await stream.receive_some(4096)
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await stream.aclose()  # keep-alive promised, then closed while idle

        servers.start_soon(trio.serve_listeners, one_then_close, listeners)
        async with cluster_of(endpoint(port)) as (cluster, pool):
            assert (await get(cluster)).status == 200
            await trio.sleep(0.1)
            writer = RecordingWriter()
            await cluster.forward(
                request(b"POST", b"/"), BytesBody(b"data"), writer, ctx(), service=SVC
            )
            assert bytes(writer.body) == b"ok"
            assert pool.statistics().discarded_stale == 1
        servers.cancel_scope.cancel()


async def test_no_healthy_endpoint() -> None:
    async with cluster_of(endpoint(1, healthy=False)) as (cluster, _pool):
        assert not cluster.has_endpoints(SVC)
        writer = RecordingWriter()
        with pytest.raises(NoHealthyEndpoint) as info:
            await cluster.forward(request(), EmptyBody(), writer, ctx(), service=SVC)
        assert info.value.http_status == 503 and not writer.head_sent
        with pytest.raises(NoHealthyEndpoint):
            await cluster.open_l4(ctx(), service=SVC)


async def test_refused_connection_is_a_retryable_error_before_the_head() -> None:
    port = await refused_port()
    async with cluster_of(endpoint(port)) as (cluster, _pool):
        assert cluster.has_endpoints(SVC)
        writer = RecordingWriter()
        body = PatternBody(1000)
        with pytest.raises(EndpointConnectFailed) as info:
            await cluster.forward(request(b"POST"), body, writer, ctx(), service=SVC)
        assert isinstance(info.value, UpstreamUnavailable) and info.value.http_status == 503
        assert not writer.head_sent and body.pulled == 0  # still replayable elsewhere


async def test_refused_endpoint_is_skipped_for_a_working_one() -> None:
    dead = await refused_port()
    async with trio.open_nursery() as servers:
        port = await servers.start(serve_http_echo, "127.0.0.1", 0, "alive")
        async with cluster_of(endpoint(dead), endpoint(port)) as (cluster, _pool):
            for _ in range(4):
                assert (await get(cluster)).json()["site"] == "alive"
        servers.cancel_scope.cancel()


async def test_deadline_gives_504_before_the_head() -> None:
    stats: dict[str, int] = {}
    async with trio.open_nursery() as servers:
        h2_port = await servers.start(serve_h2_echo, stats)
        silent = await trio.open_tcp_listeners(0, host="127.0.0.1")  # accepts, never answers
        h1_port = silent[0].socket.getsockname()[1]
        deadline_s = 0.3
        for ep, path in ((endpoint(h2_port, "http2"), b"/slow"), (endpoint(h1_port), b"/")):
            async with cluster_of(ep) as (cluster, _pool):
                writer = RecordingWriter()
                start = trio.current_time()
                # Neither endpoint ever answers: only the caller's deadline ends the wait.  The
                # guard (a wide multiple of it) only turns a hang into a failure.
                with trio.fail_after(30 * deadline_s), pytest.raises(UpstreamTimeout) as info:
                    await cluster.forward(
                        request(b"GET", path), EmptyBody(), writer, ctx(deadline_s), service=SVC
                    )
                assert info.value.http_status == 504 and not writer.head_sent
                assert trio.current_time() - start >= deadline_s  # not given up before it
        await silent[0].aclose()
        servers.cancel_scope.cancel()


async def test_tcp_endpoints_cannot_take_http() -> None:
    async with cluster_of(endpoint(9, "tcp")) as (cluster, _pool):
        with pytest.raises(ProtocolMismatch) as info:
            await get(cluster)
        assert info.value.http_status == 502


async def test_malformed_request_is_never_forwarded() -> None:
    async with trio.open_nursery() as servers:
        port = await servers.start(serve_http_echo, "127.0.0.1", 0, "e")
        async with cluster_of(endpoint(port)) as (cluster, pool):
            bad = Request(b"GET", b"http", AUTHORITY, b"/a b", ())
            with pytest.raises(MalformedHeaders):
                await get(cluster, bad)
            assert pool.statistics().dialed == 0
        servers.cancel_scope.cancel()


async def test_only_filter_restricts_the_endpoints() -> None:
    async with trio.open_nursery() as servers:
        ports = [await servers.start(serve_http_echo, "127.0.0.1", 0, f"e{i}") for i in range(2)]
        async with cluster_of(*(endpoint(p) for p in ports)) as (cluster, _pool):
            for _ in range(3):
                writer = await get(cluster, only=lambda ep: ep.port == ports[1])
                assert writer.json()["site"] == "e1"
            assert not cluster.has_endpoints(SVC, only=lambda ep: False)
        servers.cancel_scope.cancel()


async def test_open_l4_reaches_a_tcp_echo_with_half_close() -> None:
    async with trio.open_nursery() as servers:
        port = await servers.start(partial(serve_tcp_echo, "127.0.0.1", 0, "e"))
        async with cluster_of(endpoint(port, "tcp")) as (cluster, _pool):
            tcp = await cluster.open_l4(ctx(), service=SVC)
            await tcp.send_all(b"hello ")
            await tcp.send_all(b"world")
            await tcp.send_eof()  # half-close: the echo still answers
            data = b""
            with trio.fail_after(5):
                while chunk := await tcp.receive_some(4096):
                    data += chunk
            assert data == b"hello world"
            await tcp.aclose()
        servers.cancel_scope.cancel()


def test_echo_json_is_json() -> None:
    # guards the helper used above: RecordingWriter.json parses what the demo echo sends
    w = RecordingWriter()
    w.body += json.dumps({"site": "x"}).encode()
    assert w.json() == {"site": "x"}


async def test_request_trailers_reach_an_http1_endpoint_as_chunked_trailers() -> None:
    async with trio.open_nursery() as servers:
        port = await servers.start(serve_http_echo, "127.0.0.1", 0, "e")
        async with cluster_of(endpoint(port)) as (cluster, _pool):
            writer = RecordingWriter()
            body = PatternBody(100_000, trailers=((b"x-checksum", b"abc"),))
            await cluster.forward(request(b"POST", b"/t"), body, writer, ctx(), service=SVC)
            doc = writer.json()
            assert doc["body_length"] == 100_000
            assert doc["trailers"] == [["x-checksum", "abc"]]
            assert ["transfer-encoding", "chunked"] in doc["headers"]  # type: ignore[operator]
        servers.cancel_scope.cancel()


async def test_early_answer_from_an_http1_endpoint_is_relayed() -> None:
    """An endpoint that refuses an upload before reading it (413) is heard at once; the
    rest of the body is not pushed into it and its connection is not reused."""

    async def refuse_upload(stream: trio.SocketStream) -> None:
        conn = H1ServerConnection(stream)
        if await conn.next_request() is not None:
            await conn.send_response(ResponseHead(413, ()), content_length=0, end=True)
        await conn.aclose()

    async with trio.open_nursery() as servers:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        servers.start_soon(trio.serve_listeners, refuse_upload, listeners)
        port = listeners[0].socket.getsockname()[1]
        async with cluster_of(endpoint(port)) as (cluster, pool):
            writer = RecordingWriter()
            body = PatternBody(50 * 1024 * 1024)
            with trio.fail_after(10):
                await cluster.forward(request(b"POST", b"/big"), body, writer, ctx(), service=SVC)
            assert writer.status == 413 and writer.ended_with_head
            assert body.pulled < 50 * 1024 * 1024
            assert pool.statistics().idle_h1 == 0
        servers.cancel_scope.cancel()


async def test_http2_endpoint_closing_its_connection_gets_a_new_one() -> None:
    """An HTTP/2 endpoint that answers one request per connection and closes the connection
    (GOAWAY) when a second one arrives: that request is replayed on a new connection."""
    connections: list[H2Connection] = []

    async def one_stream_per_connection(stream: trio.SocketStream) -> None:
        served: list[int] = []

        async def handler(s: H2Stream) -> None:
            if served:
                await conn.aclose()
                return
            served.append(s.stream_id)
            await s.send_headers([(b":status", b"200")], end_stream=True)

        conn = H2Connection(stream, client_side=False, handler=handler, ping_interval=None)
        connections.append(conn)
        await conn.serve()

    async with trio.open_nursery() as servers:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        servers.start_soon(trio.serve_listeners, one_stream_per_connection, listeners)
        port = listeners[0].socket.getsockname()[1]
        async with cluster_of(endpoint(port, "http2")) as (cluster, _pool):
            for _ in range(3):
                with trio.fail_after(5):
                    assert (await get(cluster)).status == 200
            assert len(connections) == 3
            writer = RecordingWriter()  # not idempotent: not replayed
            with pytest.raises(ConnectionGone):
                await cluster.forward(request(b"POST"), BytesBody(b"x"), writer, ctx(), service=SVC)
        servers.cancel_scope.cancel()
