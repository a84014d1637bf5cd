"""TLSStream over real TLS 1.3 (mutual auth, ALPN h2) on loopback TCP, against itself and trio's.

What a user of a link notices: bytes arrive intact and in order both ways at once, a bulk
transfer wakes the receiver once per many records instead of once per 16 KiB record, a clean
close reads as EOF while a cut connection reads as an error, and a peer that fails the
certificate check never gets a usable stream.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
import trustme

from overlay.link.tls_stream import TLSStream

CA = trustme.CA()
SERVER_CERT = CA.issue_cert("localhost")
CLIENT_CERT = CA.issue_cert("client.localhost")
RECORD = 16 * 1024

Tls = TLSStream[trio.SocketStream] | trio.SSLStream[trio.SocketStream]
Factory = Callable[[trio.SocketStream], Tls]


def server_ctx() -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    CA.configure_trust(ctx)
    SERVER_CERT.configure_cert(ctx)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def client_ctx(ca: trustme.CA = CA) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ca.configure_trust(ctx)
    CLIENT_CERT.configure_cert(ctx)
    ctx.set_alpn_protocols(["h2"])
    return ctx


def ours_client(tcp: trio.SocketStream) -> Tls:
    return TLSStream(tcp, client_ctx(), server_hostname="localhost")


def ours_server(tcp: trio.SocketStream) -> Tls:
    return TLSStream(tcp, server_ctx(), server_side=True)


def trio_client(tcp: trio.SocketStream) -> Tls:
    return trio.SSLStream(tcp, client_ctx(), server_hostname="localhost")


def trio_server(tcp: trio.SocketStream) -> Tls:
    return trio.SSLStream(tcp, server_ctx(), server_side=True)


async def tcp_pair() -> tuple[trio.SocketStream, trio.SocketStream]:
    [listener] = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with listener:
        port = listener.socket.getsockname()[1]
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
    return client, server


@asynccontextmanager
async def tls_pair(
    make_client: Factory = ours_client, make_server: Factory = ours_server
) -> AsyncIterator[tuple[Tls, Tls]]:
    raw_client, raw_server = await tcp_pair()
    client, server = make_client(raw_client), make_server(raw_server)
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.do_handshake)
                await client.do_handshake()
        yield client, server
    finally:
        await trio.aclose_forcefully(client)
        await trio.aclose_forcefully(server)


async def receive_exactly(stream: Tls, size: int, max_bytes: int = 256 * 1024) -> bytes:
    got = bytearray()
    for _ in range(size):  # bounded: every pass returns at least one byte or fails
        if len(got) >= size:
            break
        chunk = await stream.receive_some(max_bytes)
        assert chunk, f"EOF after {len(got)} of {size} bytes"
        assert len(chunk) <= max_bytes
        got += chunk
    return bytes(got)


async def test_handshake_both_roles_mutual_auth_and_alpn() -> None:
    async with tls_pair() as (client, server):
        assert isinstance(client, TLSStream) and isinstance(server, TLSStream)
        for stream in (client, server):
            assert stream.ssl_object.selected_alpn_protocol() == "h2"
            assert stream.ssl_object.version() == "TLSv1.3"
            assert stream.ssl_object.getpeercert(binary_form=True)
        assert not client.ssl_object.server_side and server.ssl_object.server_side
        assert isinstance(client.transport_stream, trio.SocketStream)


@pytest.mark.parametrize(
    ("make_client", "make_server"),
    [(ours_client, ours_server), (ours_client, trio_server), (trio_client, ours_server)],
    ids=["ours-ours", "ours-trio", "trio-ours"],
)
async def test_8_mib_each_way_concurrently_byte_identical(
    make_client: Factory, make_server: Factory
) -> None:
    size = 8 * 1024 * 1024
    up, down = os.urandom(size), os.urandom(size)
    received: dict[str, bytes] = {}
    async with tls_pair(make_client, make_server) as (client, server):

        async def pull(name: str, stream: Tls) -> None:
            received[name] = await receive_exactly(stream, size)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(pull, "server", server)
                nursery.start_soon(pull, "client", client)
                nursery.start_soon(client.send_all, up)
                nursery.start_soon(server.send_all, down)
    assert received["server"] == up
    assert received["client"] == down


async def test_one_receive_returns_many_records_but_never_more_than_max_bytes() -> None:
    payload = os.urandom(192 * 1024)  # twelve records
    async with tls_pair() as (client, server):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, payload)
                # The sender runs until loopback's buffers are full (or all is sent), however
                # slow the machine: only then is every task blocked.
                await trio.testing.wait_all_tasks_blocked()
                first = await server.receive_some(100_000)
                assert RECORD < len(first) <= 100_000  # several records for one wakeup
                rest = await receive_exactly(server, len(payload) - len(first), max_bytes=20_000)
    assert first + rest == payload


async def test_trio_sslstream_returns_one_record_per_receive() -> None:
    """The behaviour this stream exists to change, measured the same way as above."""
    payload = os.urandom(192 * 1024)
    async with tls_pair(ours_client, trio_server) as (client, server):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, payload)
                await trio.testing.wait_all_tasks_blocked()  # as above: buffers are full
                first = await server.receive_some(100_000)
                assert len(first) <= RECORD
                await receive_exactly(server, len(payload) - len(first))


async def test_close_notify_reads_as_eof_after_the_data() -> None:
    async with tls_pair() as (client, server):
        with trio.fail_after(5):
            await client.send_all(b"last words")
            await client.aclose()
            assert await receive_exactly(server, 10) == b"last words"
            assert await server.receive_some(100) == b""
            assert await server.receive_some(100) == b""


async def test_ragged_eof_is_an_error_after_the_data() -> None:
    async with tls_pair() as (client, server):
        with trio.fail_after(5):
            await client.send_all(b"cut off")
            await client.transport_stream.aclose()  # TCP FIN without close_notify
            assert await receive_exactly(server, 7) == b"cut off"
            with pytest.raises(trio.BrokenResourceError) as err:
                await server.receive_some(100)
            assert isinstance(err.value.__cause__, ssl.SSLError)
            with pytest.raises(trio.BrokenResourceError):
                await server.receive_some(100)
            with pytest.raises(trio.BrokenResourceError):
                await server.send_all(b"x")


async def test_concurrent_receives_are_busy() -> None:
    async with tls_pair() as (client, server):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(server.receive_some, 100)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await server.receive_some(100)
                await client.send_all(b"x")  # lets the first receive finish
            await client.send_all(b"y")
            assert await server.receive_some(100) == b"y"  # still usable


async def test_a_cancelled_receive_loses_nothing() -> None:
    async with tls_pair() as (client, server):
        with trio.fail_after(5):
            with trio.move_on_after(0.05):
                await server.receive_some(100)
            await client.send_all(b"after the cancel")
            assert await receive_exactly(server, 16) == b"after the cancel"


async def test_cancelled_send_is_busy_meanwhile_and_breaks_the_stream() -> None:
    big = bytes(64 * 1024 * 1024)  # far more than loopback buffers while nobody reads
    async with tls_pair() as (client, _server):
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(client.send_all, big)
                await trio.testing.wait_all_tasks_blocked()
                with pytest.raises(trio.BusyResourceError):
                    await client.send_all(b"x")
                nursery.cancel_scope.cancel()
            with pytest.raises(trio.BrokenResourceError):
                await client.send_all(b"x")


async def test_closed_after_aclose_and_aclose_is_idempotent() -> None:
    async with tls_pair() as (client, server):
        with trio.fail_after(5):
            await client.aclose()
            await client.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await client.send_all(b"x")
            with pytest.raises(trio.ClosedResourceError):
                await client.receive_some(10)
            assert await server.receive_some(10) == b""


async def test_aclose_wakes_a_blocked_receiver_with_closed() -> None:
    async with tls_pair() as (client, _server):
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def receiver() -> None:
                    with pytest.raises(trio.ClosedResourceError):
                        await client.receive_some(10)

                nursery.start_soon(receiver)
                await trio.testing.wait_all_tasks_blocked()
                await client.aclose()


async def test_untrusted_peer_fails_the_handshake_and_the_stream_stays_unusable() -> None:
    raw_client, raw_server = await tcp_pair()
    client = TLSStream(raw_client, client_ctx(trustme.CA()), server_hostname="localhost")
    server = TLSStream(raw_server, server_ctx(), server_side=True)
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def serve() -> None:
                    with pytest.raises(trio.BrokenResourceError):
                        await server.do_handshake()

                nursery.start_soon(serve)
                with pytest.raises(trio.BrokenResourceError) as err:
                    await client.do_handshake()
                assert isinstance(err.value.__cause__, ssl.SSLCertVerificationError)
                with pytest.raises(trio.BrokenResourceError):
                    await client.send_all(b"x")
                with pytest.raises(trio.BrokenResourceError):
                    await client.receive_some(10)
                with pytest.raises(trio.BrokenResourceError):
                    await client.do_handshake()
                await client.aclose()  # as open_link does on failure: the server sees EOF
    finally:
        await client.aclose()
        await server.aclose()


async def test_a_rejected_client_learns_of_it_only_when_the_server_closes() -> None:
    """TLS 1.3: the client finishes first; the server's verdict reaches it as the close, so
    the server's owner can log the rejection before the peer sees anything (no alert)."""
    stranger = trustme.CA().issue_cert("client.localhost")
    ctx = client_ctx()
    stranger.configure_cert(ctx)
    raw_client, raw_server = await tcp_pair()
    client = TLSStream(raw_client, ctx, server_hostname="localhost")
    server = TLSStream(raw_server, server_ctx(), server_side=True)
    try:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:

                async def serve() -> None:
                    with pytest.raises(trio.BrokenResourceError) as err:
                        await server.do_handshake()
                    assert isinstance(err.value.__cause__, ssl.SSLCertVerificationError)

                nursery.start_soon(serve)
                await client.do_handshake()
            with trio.move_on_after(0.2) as waited:
                await client.receive_some(10)
            assert waited.cancelled_caught  # nothing arrived while the server had not closed
            await server.aclose()
            with pytest.raises(trio.BrokenResourceError):
                await client.receive_some(10)
    finally:
        await client.aclose()
        await server.aclose()


async def test_close_notify_interop_with_trio_sslstream() -> None:
    async with tls_pair(trio_client, ours_server) as (client, server):
        with trio.fail_after(5):
            await server.send_all(b"from ours")
            assert await receive_exactly(client, 9) == b"from ours"
            await client.send_all(b"from trio")
            await client.aclose()
            assert await receive_exactly(server, 9) == b"from trio"
            assert await server.receive_some(10) == b""
