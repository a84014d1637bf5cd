"""H2Connection + H2Stream: round trips, concurrency, flow control, half-close, resets, CONNECT.

Protocol tests run over trio's in-memory stream pairs; the bulk-transfer test runs over real
loopback TCP.  Both ends are real h2 state machines: nothing here is mocked.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import trustme

from foundation.errors import H2_CANCEL, H2_INTERNAL_ERROR, H2_NO_ERROR
from overlay.h2.connection import H2Connection
from overlay.h2.limits import H2Limits
from overlay.h2.stream import ConnectionGone, H2Stream, InvalidHeaders, StreamReset

pytestmark = pytest.mark.usefixtures("any_engine")

Handler = Callable[[H2Stream], Awaitable[None]]

GET = [(":method", "GET"), (":scheme", "https"), (":path", "/x"), (":authority", "a.b.isthmus")]
POST = [(":method", "POST"), (":scheme", "https"), (":path", "/"), (":authority", "a.b.isthmus")]


@asynccontextmanager
async def h2_pair(
    handler: Handler,
    *,
    limits: H2Limits | None = None,
    tcp: bool = False,
) -> AsyncIterator[tuple[H2Connection, H2Connection]]:
    if tcp:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        a: trio.abc.Stream = await trio.open_tcp_stream("127.0.0.1", port)
        b: trio.abc.Stream = await listeners[0].accept()
        await listeners[0].aclose()
    else:
        a, b = trio.testing.memory_stream_pair()
    client = H2Connection(a, client_side=True, limits=limits, ping_interval=None)
    server = H2Connection(b, client_side=False, handler=handler, limits=limits, ping_interval=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        yield client, server
        await client.aclose()
        await server.aclose()


async def eventually(predicate: Callable[[], bool], seconds: float = 5.0) -> None:
    """Poll a condition a bounded number of times (bounded in count and in time)."""
    for _ in range(int(seconds / 0.01)):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("condition not reached in time")


async def read_all(stream: trio.abc.ReceiveStream, limit: int = 1 << 30) -> bytes:
    out = bytearray()
    while data := await stream.receive_some():
        out += data
        assert len(out) <= limit
    return bytes(out)


async def echo_handler(stream: H2Stream) -> None:
    body = await read_all(stream)
    path = dict(stream.request_headers)[b":path"]
    await stream.send_headers([(":status", "200"), ("x-path", path)])
    await stream.send_all(b"echo:" + body)
    await stream.send_eof()


async def test_request_response_round_trip() -> None:
    async with h2_pair(echo_handler) as (client, server):
        stream = await client.open_stream(POST)
        await stream.send_all(b"hello")
        await stream.send_eof()
        headers = await stream.response_headers()
        assert (b":status", b"200") in headers
        assert (b"x-path", b"/") in headers
        assert await read_all(stream) == b"echo:hello"
        assert client.statistics().streams_opened == 1
        assert server.statistics().streams_opened == 1


async def test_trailers_both_ways() -> None:
    seen: list[object] = []

    async def handler(stream: H2Stream) -> None:
        body = await read_all(stream)
        seen.append((body, stream.trailers))
        await stream.send_headers([(":status", "200")])
        await stream.send_all(b"ok")
        await stream.send_trailers([("grpc-status", "0")])

    async with h2_pair(handler) as (client, _server):
        stream = await client.open_stream(POST)
        await stream.send_all(b"body")
        await stream.send_trailers([("x-checksum", "abc")])
        assert await read_all(stream) == b"ok"
        assert stream.trailers == [(b"grpc-status", b"0")]
    assert seen == [(b"body", [(b"x-checksum", b"abc")])]


async def test_many_concurrent_streams() -> None:
    results: dict[int, bytes] = {}

    async def one(client: H2Connection, i: int) -> None:
        stream = await client.open_stream([*GET[:2], (":path", f"/{i}"), GET[3]], end_stream=True)
        assert dict(await stream.response_headers())[b"x-path"] == f"/{i}".encode()
        results[i] = await read_all(stream)

    async with h2_pair(echo_handler) as (client, server):
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for i in range(250):  # more than the 100-stream limit: openers wait for slots
                    nursery.start_soon(one, client, i)
        assert len(results) == 250
        assert all(body == b"echo:" for body in results.values())
        assert server.statistics().streams_refused == 0


async def test_bulk_transfer_over_tcp_has_bounded_buffers() -> None:
    size = int(os.environ.get("ISTHMUS_H2_BULK_MIB", "32")) * 1024 * 1024
    limits = H2Limits()
    received: list[tuple[int, int]] = []

    async def sink(stream: H2Stream) -> None:
        total = 0
        while data := await stream.receive_some(65536):
            total += len(data)
        received.append((total, stream.statistics().max_buffered))
        await stream.send_headers([(":status", "200")], end_stream=True)

    async with h2_pair(sink, limits=limits, tcp=True) as (client, _server):
        stream = await client.open_stream(POST)
        chunk = b"x" * (256 * 1024)
        with trio.fail_after(60):  # hang guard; throughput is scripts/bench_link.py's business
            for _ in range(size // len(chunk)):
                await stream.send_all(chunk)
            await stream.send_eof()
            await stream.response_headers()
        stats = client.statistics()
    [(total, max_buffered)] = received
    assert total == size
    assert 0 < max_buffered <= limits.stream_window
    # The writer's queue never held much more than its bound (control frames may overshoot).
    assert stats.max_outbound_buffered <= limits.max_outbound_buffer + 1024


@pytest.mark.parametrize("window", [16 * 1024, 64 * 1024])
async def test_slow_reader_slows_the_writer(window: int, autojump_clock: trio.abc.Clock) -> None:
    may_read = trio.Event()
    server_streams: list[H2Stream] = []

    async def lazy(stream: H2Stream) -> None:
        server_streams.append(stream)
        await may_read.wait()
        await read_all(stream)
        await stream.send_headers([(":status", "204")], end_stream=True)

    limits = H2Limits(stream_window=window)
    # Before the peer acknowledges a smaller window it may use the RFC default of 65535.
    bound = max(window, 65535)
    async with h2_pair(lazy, limits=limits) as (client, server):
        stream = await client.open_stream(POST)
        done = False

        async def writer() -> None:
            nonlocal done
            await stream.send_all(b"y" * (1024 * 1024))
            await stream.send_eof()
            done = True

        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer)
            await trio.sleep(30)  # the reader does not read: the writer must be stuck
            assert not done
            # The wait was for the peer's flow-control window (counted for the link metrics).
            assert client.statistics().flow_control_stalls >= 1
            [peer] = server_streams
            buffered = peer.statistics().buffered
            assert 0 < buffered <= bound
            assert server.statistics().bytes_received < bound + 4096
            may_read.set()
        assert done
        assert (b":status", b"204") in await stream.response_headers()
        assert peer.statistics().max_buffered <= bound


async def test_half_close_both_directions() -> None:
    async def handler(stream: H2Stream) -> None:
        await stream.send_headers([(":status", "200")])
        await stream.send_all(b"server-first")
        await stream.send_eof()  # our direction is over; keep reading the client's
        data = await read_all(stream)
        assert data == b"late client data"

    async with h2_pair(handler) as (client, server):
        stream = await client.open_stream(POST)
        assert await read_all(stream) == b"server-first"  # EOF from the server...
        await stream.send_all(b"late client data")  # ...while we can still send
        await stream.send_eof()
        await eventually(lambda: server.statistics().open_streams == 0)
        assert client.statistics().open_streams == 0

    # And the other way round: the client ends first, the server keeps sending.
    async def streamer(stream: H2Stream) -> None:
        assert await read_all(stream) == b"request"
        await stream.send_headers([(":status", "200")])
        for i in range(5):
            await stream.send_all(f"part{i};".encode())
        await stream.send_eof()

    async with h2_pair(streamer) as (client, _server):
        stream = await client.open_stream(POST)
        await stream.send_all(b"request")
        await stream.send_eof()
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"more")
        assert await read_all(stream) == b"part0;part1;part2;part3;part4;"


async def test_reset_propagates_from_client_to_server() -> None:
    outcome: list[BaseException] = []
    reading = trio.Event()

    async def handler(stream: H2Stream) -> None:
        reading.set()
        try:
            await read_all(stream)
        except StreamReset as exc:
            outcome.append(exc)
            raise

    async with h2_pair(handler) as (client, _server):
        stream = await client.open_stream(POST)
        await stream.send_all(b"partial")
        await reading.wait()
        stream.reset(H2_CANCEL)
        with pytest.raises(StreamReset) as local:
            await stream.send_all(b"x")
        assert not local.value.remote
        await eventually(lambda: bool(outcome))
        [exc] = outcome
        assert isinstance(exc, StreamReset) and exc.remote and exc.error_code == H2_CANCEL


async def test_close_now_resets_an_unfinished_stream_without_a_checkpoint() -> None:
    """The synchronous close a forwarder's ``finally`` uses (no shielded scope, no trip
    through the scheduler): an unfinished request is reset with CANCEL at once; closing
    again, or ``aclose`` after it, is a no-op."""
    outcome: list[BaseException] = []
    reading = trio.Event()

    async def handler(stream: H2Stream) -> None:
        reading.set()
        try:
            await read_all(stream)
        except StreamReset as exc:
            outcome.append(exc)
            raise

    async with h2_pair(handler) as (client, _server):
        stream = await client.open_stream(POST)
        await stream.send_all(b"partial")
        await reading.wait()
        stream.close_now()
        assert stream.finished
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"x")
        await eventually(lambda: bool(outcome))
        [exc] = outcome
        assert isinstance(exc, StreamReset) and exc.remote and exc.error_code == H2_CANCEL
        stream.close_now()
        await stream.aclose()
        assert len(outcome) == 1


async def test_reset_propagates_from_server_to_client() -> None:
    async def handler(stream: H2Stream) -> None:
        await stream.send_headers([(":status", "200")])
        await stream.send_all(b"some")
        raise RuntimeError("handler bug")  # the connection resets the stream for us

    async with h2_pair(handler) as (client, _server):
        stream = await client.open_stream(POST)
        await stream.response_headers()
        with pytest.raises(StreamReset) as err:
            await read_all(stream)
        assert err.value.remote and err.value.error_code == H2_INTERNAL_ERROR
        # The connection survives a stream error.
        again = await client.open_stream(GET, end_stream=True)
        assert isinstance(again, H2Stream)


async def test_a_complete_response_survives_rst_stream_no_error() -> None:
    """RFC 9113 section 8.1: a server may answer in full and then stop the request with
    RST_STREAM NO_ERROR; the client "MUST NOT discard" the response."""
    done = trio.Event()

    async def answer_then_stop(stream: H2Stream) -> None:
        await stream.send_headers([(":status", "403")])
        await stream.send_all(b"complete answer")
        await stream.send_eof()  # returning with the request open: the connection resets it
        done.set()

    async with h2_pair(answer_then_stop) as (client, _server):
        stream = await client.open_stream(POST)  # the request never ends
        await stream.response_headers()
        await done.wait()
        await eventually(lambda: stream.finished)  # the reset has arrived
        assert await stream.receive_some() == b"complete answer"
        with pytest.raises(StreamReset) as err:
            await stream.receive_some()
        assert err.value.remote and err.value.error_code == H2_NO_ERROR
        with pytest.raises(StreamReset):
            await stream.send_all(b"more")
        await stream.aclose()


async def test_connect_stream_carries_raw_bytes_both_ways() -> None:
    seen: list[dict[bytes, bytes]] = []

    async def tcp_echo(stream: H2Stream) -> None:
        seen.append(dict(stream.request_headers))
        await stream.send_headers([(":status", "200")])
        while data := await stream.receive_some():
            await stream.send_all(data.upper())
        await stream.send_eof()

    async with h2_pair(tcp_echo) as (client, _server):
        tunnel = await client.open_stream(
            [(":method", "CONNECT"), (":authority", "db.payments.isthmus:5432")]
        )
        assert (b":status", b"200") in await tunnel.response_headers()
        for payload in (b"\x00\x01binary\xff", b"second write", bytes(range(256)) * 100):
            await tunnel.send_all(payload)
            got = b""
            with trio.fail_after(5):
                while len(got) < len(payload):
                    got += await tunnel.receive_some()
            assert got == payload.upper()
        await tunnel.send_eof()
        assert await tunnel.receive_some() == b""
    assert seen[0][b":method"] == b"CONNECT"
    assert seen[0][b":authority"] == b"db.payments.isthmus:5432"
    assert b":path" not in seen[0] and b":scheme" not in seen[0]


async def test_invalid_request_headers_are_a_typed_error() -> None:
    async with h2_pair(echo_handler) as (client, _server):
        with pytest.raises(InvalidHeaders):
            await client.open_stream([(":method", "GET"), ("connection", "close")])
        # The failed attempt did not use up a slot or break the connection.
        stream = await client.open_stream(GET, end_stream=True)
        assert (b":status", b"200") in await stream.response_headers()


async def test_streams_fail_when_the_connection_closes() -> None:
    started = trio.Event()

    async def hang(stream: H2Stream) -> None:
        started.set()
        await trio.sleep_forever()

    async with h2_pair(hang) as (client, server):
        stream = await client.open_stream(POST)
        await started.wait()
        await server.aclose()
        with pytest.raises(ConnectionGone):
            await stream.receive_some()
        with pytest.raises(ConnectionGone):
            await client.open_stream(GET)
        reason = await client.wait_closed()
        assert isinstance(reason, ConnectionGone)


async def test_server_role_cannot_open_streams() -> None:
    async with h2_pair(echo_handler) as (_client, server):
        with pytest.raises(RuntimeError):
            await server.open_stream(GET)


async def test_drain_lets_open_streams_finish_and_refuses_new_ones() -> None:
    release = trio.Event()

    async def slow(stream: H2Stream) -> None:
        await release.wait()
        await echo_handler(stream)

    async with h2_pair(slow) as (client, server):
        inflight = await client.open_stream(POST)
        await inflight.send_all(b"in flight")
        await inflight.send_eof()
        await eventually(lambda: server.statistics().open_streams == 1)

        async def graceful_close() -> None:
            with trio.move_on_after(30):
                await server.drain()
            await server.aclose()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(graceful_close)
            await eventually(lambda: server.is_closing)
            late = await client.open_stream(GET, end_stream=True)
            with pytest.raises(StreamReset) as refused:
                await late.response_headers()
            assert refused.value.refused
            release.set()
            assert await read_all(inflight) == b"echo:in flight"
        assert isinstance(await client.wait_closed(), ConnectionGone)


async def test_acceptor_reaches_the_dialer_through_a_reverse_connection() -> None:
    """Outbound-only sites: the dialer opens one CONNECT stream and serves a *second* HTTP/2
    connection inside it, in which the acceptor is the client.  Roles stay clean (streams are
    client-initiated on each connection) and no inbound TCP connection to the dialer is needed.
    """
    answers: list[bytes] = []

    async def acceptor(stream: H2Stream) -> None:
        await stream.send_headers([(":status", "200")])
        reverse = H2Connection(stream, client_side=True, ping_interval=None)
        async with trio.open_nursery() as nursery:
            await nursery.start(reverse.serve)
            call = await reverse.open_stream(GET, end_stream=True)
            await call.response_headers()
            answers.append(await read_all(call))
            await reverse.aclose()

    async def dialer_side_service(stream: H2Stream) -> None:
        await stream.send_headers([(":status", "200")])
        await stream.send_all(b"served by the dialer")
        await stream.send_eof()

    async with h2_pair(acceptor) as (client, _server):
        carrier = await client.open_stream(
            [(":method", "CONNECT"), (":authority", "reverse.isthmus:0")]
        )
        await carrier.response_headers()
        inner = H2Connection(carrier, client_side=False, handler=dialer_side_service)
        with trio.fail_after(5):
            await inner.serve()  # returns when the acceptor closes the reverse connection
    assert answers == [b"served by the dialer"]


async def test_peer_reset_cancels_the_handler() -> None:
    cancelled = trio.Event()
    working = trio.Event()

    async def busy(stream: H2Stream) -> None:
        working.set()
        try:
            await trio.sleep_forever()  # e.g. waiting on an upstream: no stream I/O at all
        finally:
            cancelled.set()

    async with h2_pair(busy) as (client, server):
        stream = await client.open_stream(GET, end_stream=True)
        await working.wait()
        assert server.statistics().handlers_running == 1
        stream.reset()
        with trio.fail_after(5):
            await cancelled.wait()
        await eventually(lambda: server.statistics().handlers_running == 0)


async def test_data_before_response_headers_is_a_caller_error() -> None:
    errors: list[BaseException] = []

    async def rude(stream: H2Stream) -> None:
        try:
            await stream.send_all(b"no headers yet")
        except RuntimeError as exc:
            errors.append(exc)
        await stream.send_headers([(":status", "200")], end_stream=True)

    async with h2_pair(rude) as (client, _server):
        stream = await client.open_stream(GET, end_stream=True)
        assert (b":status", b"200") in await stream.response_headers()
    assert len(errors) == 1


async def test_over_real_tls_with_alpn_h2() -> None:
    """The layer runs over any trio Stream; here the one the link layer hands over in use:
    a trio.SSLStream (TLS 1.3, ALPN h2) on loopback TCP."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    for ctx in (server_ctx, client_ctx):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.set_alpn_protocols(["h2"])

    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listener.socket.getsockname()[1]
    raw_client = await trio.open_tcp_stream("127.0.0.1", port)
    raw_server = await listener.accept()
    await listener.aclose()
    tls_client = trio.SSLStream(raw_client, client_ctx, server_hostname="localhost")
    tls_server = trio.SSLStream(raw_server, server_ctx, server_side=True)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(tls_server.do_handshake)
        await tls_client.do_handshake()
    assert tls_client.selected_alpn_protocol() == "h2"

    client = H2Connection(tls_client, client_side=True, ping_interval=1.0, ping_timeout=5.0)
    server = H2Connection(tls_server, client_side=False, handler=echo_handler, ping_interval=None)
    size = 8 * 1024 * 1024
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        stream = await client.open_stream(POST)
        with trio.fail_after(30):  # hang guard, not a speed claim

            async def upload() -> None:
                block = b"z" * 65536
                for _ in range(size // len(block)):
                    await stream.send_all(block)
                await stream.send_eof()

            nursery.start_soon(upload)
            body = await read_all(stream)
        assert body == b"echo:" + b"z" * size
        await client.aclose()
    assert isinstance(server.close_reason, ConnectionGone)


async def test_idle_connection_is_closed_and_busy_one_is_not(
    autojump_clock: trio.abc.Clock,
) -> None:
    release = trio.Event()

    async def slow(stream: H2Stream) -> None:
        if dict(stream.request_headers)[b":path"] == b"/slow":
            await release.wait()
        await echo_handler(stream)

    a, b = trio.testing.memory_stream_pair()
    client = H2Connection(a, client_side=True, ping_interval=None)
    server = H2Connection(b, client_side=False, handler=slow, ping_interval=None, idle_timeout=300)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        long = await client.open_stream([*GET[:2], (":path", "/slow"), GET[3]], end_stream=True)
        await trio.sleep(1000)  # an open stream, however quiet, is not idleness
        assert server.close_reason is None
        release.set()
        await long.response_headers()
        assert await read_all(long) == b"echo:"
        ended = trio.current_time()
        await trio.sleep(299)
        assert server.close_reason is None
        with trio.fail_after(5):
            reason = await client.wait_closed()
        assert 300 <= trio.current_time() - ended <= 301
        assert isinstance(reason, ConnectionGone) and reason.error_code == 0
        assert "idle" in str(server.close_reason)


@pytest.mark.parametrize("size", [5, 200_000])
async def test_send_response_delivers_a_complete_response(size: int) -> None:
    """send_response: a small response arrives whole (headers, body and end together, so the
    receiver can relay it in one write); one larger than the window still arrives intact."""
    body = os.urandom(size)

    async def handler(stream: H2Stream) -> None:
        await read_all(stream)
        await stream.send_response([(":status", "200"), ("x-size", str(size))], body)
        with pytest.raises(trio.ClosedResourceError):
            await stream.send_all(b"more")

    limits = H2Limits(stream_window=65_535)
    async with h2_pair(handler, limits=limits) as (client, _server):
        stream = await client.open_stream(GET, end_stream=True)
        headers = await stream.response_headers()
        assert (b"x-size", str(size).encode()) in headers
        if size < limits.stream_window:
            stats = stream.statistics()
            assert stats.remote_ended
            assert stats.buffered == size
        assert await read_all(stream) == body


async def test_receive_is_one_checkpoint_and_a_cancelled_wait_loses_nothing() -> None:
    release, done = trio.Event(), trio.Event()

    async def slow_echo(stream: H2Stream) -> None:
        await stream.send_headers([(":status", "200")])
        await release.wait()
        await stream.send_all(b"late")
        await stream.send_eof()
        await done.wait()  # returning would reset the stream (RST NO_ERROR) before we read

    async with h2_pair(slow_echo) as (client, _server):
        tunnel = await client.open_stream(
            [(":method", "CONNECT"), (":authority", "db.payments.isthmus:5432")]
        )
        with trio.testing.assert_checkpoints():
            await tunnel.response_headers()  # already here: still a checkpoint
        with trio.move_on_after(0.05) as waited:
            await tunnel.receive_some()  # nothing sent yet: parks, then is cancelled
        assert waited.cancelled_caught
        release.set()
        with trio.fail_after(5):
            for _ in range(500):  # bounded poll for the data to arrive
                if tunnel.statistics().buffered >= 4:
                    break
                await trio.sleep(0.01)
        with trio.CancelScope() as scope:
            scope.cancel()
            with pytest.raises(trio.Cancelled):
                await tunnel.receive_some()  # cancelled before taking anything...
        assert tunnel.statistics().buffered == 4  # ...so nothing was lost
        with trio.testing.assert_checkpoints():
            assert await tunnel.receive_some() == b"late"  # buffered: one checkpoint
        assert await tunnel.receive_some() == b""
        done.set()
