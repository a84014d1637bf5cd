"""A caller that stops reading is reset after ``send_timeout_s``, on every kind of listener
(HTTP/1.1, h2c, TLS with either, CONNECT, SNI, service port).

Real sockets on 127.0.0.1: the caller shrinks its receive buffer and never reads, behind the
gateway an endpoint sends without end.  Once the kernel's buffers are full the gateway's
sends make no progress; after ``send_timeout_s`` the gateway must close with RST (the caller's
socket sees the reset: TCP state CLOSE, ``ConnectionResetError``), and its own socket must be
gone, not parked in FIN-WAIT-1 behind megabytes nobody will read.

Real time is unavoidable (kernel buffers); the only bound on it is a hang guard of 20x the
configured timeout, and nothing is asserted about how long anything took.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from functools import partial
from ipaddress import IPv4Address
from pathlib import Path

import h2.config
import h2.connection
import h2.settings
import pytest
import trio

from gateway.config.model import ListenerConfig, ServicePortConfig
from gateway.listener.caller_stream import unsent_bytes
from gateway.listener.http import serve_http_listener
from gateway.listener.service_port import serve_service_port
from gateway.listener.sni import serve_sni_listener
from tests.gateway.listener.listener_kit import client_context, http_listener
from tests.gateway.router.router_kit import (
    API,
    DB,
    TEST_LIMITS,
    StandInCluster,
    make_router,
    serving,
)
from tests.overlay.identity.cases import SERVER_CHAIN, SERVER_KEY, TRUSTED
from tests.overlay.identity.certfactory import identity

SEND_TIMEOUT_S = 0.5
HANG_GUARD_S = 20 * SEND_TIMEOUT_S
LIMITS = replace(
    TEST_LIMITS, send_timeout_s=SEND_TIMEOUT_S, stream_idle_timeout_s=60.0, route_timeout_s=60.0
)
PIECE = b"x" * 65536
MAX_PIECES = 8192  # 512 MiB at most: far beyond any kernel buffer, still bounded
TCP_CLOSE = 7  # include/net/tcp_states.h


async def _firehose(stream: trio.SocketStream, *, http: bool) -> None:
    """An endpoint that answers with (practically) endless data until its peer goes away."""
    try:
        if http:
            buf = b""
            while b"\r\n\r\n" not in buf:
                data = await stream.receive_some(65536)
                if not data:
                    return
                buf += data
            await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (1 << 40))
        for _ in range(MAX_PIECES):
            await stream.send_all(PIECE)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass


def _tcp_state(sock: trio.socket.SocketType) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]  # tcpi_state


def _kernel_sockets(local_port: int, remote_port: int) -> list[int]:
    """States of the kernel's TCP sockets from ``local_port`` to ``remote_port`` (IPv4)."""
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], int(fields[3], 16)
        if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == (
            remote_port
        ):
            states.append(state)
    return states


async def _stalled_caller(port: int, request: bytes, *, tls: ssl.SSLContext | None = None) -> None:
    """Connect with a tiny receive buffer, send ``request`` (over TLS with ``tls``), never
    read again; then check that the gateway reset the connection and left no socket behind."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
        await sock.connect(("127.0.0.1", port))
        if tls is None:
            await sock.send(request)
        else:
            stream = trio.SSLStream(trio.SocketStream(sock), tls, server_hostname="gateway")
            with trio.fail_after(HANG_GUARD_S):
                await stream.do_handshake()
                await stream.send_all(request)
        with trio.fail_after(HANG_GUARD_S):
            for _ in range(100_000):  # only an RST closes a socket that never read
                if _tcp_state(sock) == TCP_CLOSE:
                    break
                await trio.sleep(0.02)
        client_port = sock.getsockname()[1]
        assert _kernel_sockets(port, client_port) == [], "the gateway kept its socket"
        with pytest.raises(ConnectionResetError):  # not EOF: an abort, nothing was complete
            for _ in range(1000):
                if not await sock.recv(65536):
                    break


def _h2c_request_with_open_windows(authority: bytes) -> bytes:
    """Preface, SETTINGS with the largest window, a connection WINDOW_UPDATE and a GET: the
    gateway may send as much as it likes, so only TCP can hold it back."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.local_settings = h2.settings.Settings(
        client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 2**31 - 1}
    )
    conn.initiate_connection()
    conn.increment_flow_control_window(2**31 - 1 - 65535)
    conn.send_headers(
        1,
        [(":method", "GET"), (":scheme", "http"), (":authority", authority), (":path", "/")],
        end_stream=True,
    )
    return conn.data_to_send()


@asynccontextmanager
async def _http_gateway() -> AsyncIterator[int]:
    async with serving(partial(_firehose, http=True)) as backend:
        router = make_router({API: ("a",)}, cluster=StandInCluster(http={API: backend}))
        async with http_listener(router, limits=LIMITS) as port:
            yield port


@pytest.mark.parametrize("wire", ["http1", "h2c"])
@pytest.mark.usefixtures("caller_engine")
async def test_http_caller_that_never_reads_is_reset_after_send_timeout(wire: str) -> None:
    async with _http_gateway() as port:
        if wire == "http1":
            request = b"GET /big HTTP/1.1\r\nHost: api.default.isthmus\r\n\r\n"
        else:
            request = _h2c_request_with_open_windows(b"api.default.isthmus")
        await _stalled_caller(port, request)


@pytest.mark.parametrize("alpn", ["http/1.1", "h2"])
@pytest.mark.usefixtures("caller_engine")
async def test_tls_caller_that_never_reads_is_reset(alpn: str) -> None:
    config = ListenerConfig(
        name="https", kind="http", address=IPv4Address("127.0.0.1"), port=0, tls=True
    )
    ident = identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED))
    async with serving(partial(_firehose, http=True)) as backend, trio.open_nursery() as nursery:
        router = make_router({API: ("a",)}, cluster=StandInCluster(http={API: backend}))
        port = await nursery.start(
            partial(
                serve_http_listener, config, router, identity=ident, limits=LIMITS, local_site="a"
            )
        )
        if alpn == "h2":
            request = _h2c_request_with_open_windows(b"api.default.isthmus")
        else:
            request = b"GET /big HTTP/1.1\r\nHost: api.default.isthmus\r\n\r\n"
        await _stalled_caller(port, request, tls=client_context([alpn]))
        nursery.cancel_scope.cancel()


async def test_connect_tunnel_caller_that_never_reads_is_reset() -> None:
    async with serving(partial(_firehose, http=False)) as backend:
        router = make_router({DB: ("a",)}, cluster=StandInCluster(tcp={DB: backend}))
        async with http_listener(router, limits=LIMITS) as port:
            await _stalled_caller(
                port,
                b"CONNECT db.default.isthmus:5432 HTTP/1.1\r\nHost: db.default.isthmus\r\n\r\n",
            )


async def test_service_port_caller_that_never_reads_is_reset() -> None:
    config = ServicePortConfig(
        name="legacy", address=IPv4Address("127.0.0.1"), port=0, target="db.default.isthmus"
    )
    async with serving(partial(_firehose, http=False)) as backend:
        router = make_router({DB: ("a",)}, cluster=StandInCluster(tcp={DB: backend}))
        async with trio.open_nursery() as nursery:
            port = await nursery.start(
                partial(serve_service_port, config, router, limits=LIMITS, local_site="a")
            )
            await _stalled_caller(port, b"hello")
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize("what", ["response", "tunnel"])
async def test_a_connection_ended_by_an_error_with_bytes_queued_is_reset(what: str) -> None:
    """No send timeout here (60 s): an HTTP response cut by the stream idle timeout, or a
    CONNECT tunnel ended by its idle timeout, while the kernel still holds bytes for the
    caller.  A graceful close would park the FIN behind them; the gateway resets instead."""
    limits = replace(LIMITS, send_timeout_s=60.0, stream_idle_timeout_s=0.5, idle_timeout_s=0.5)
    if what == "response":
        async with serving(partial(_firehose, http=True)) as backend:
            router = make_router({API: ("a",)}, cluster=StandInCluster(http={API: backend}))
            async with http_listener(router, limits=limits) as port:
                await _stalled_caller(
                    port, b"GET /big HTTP/1.1\r\nHost: api.default.isthmus\r\n\r\n"
                )
    else:
        async with serving(partial(_firehose, http=False)) as backend:
            router = make_router({DB: ("a",)}, cluster=StandInCluster(tcp={DB: backend}))
            async with http_listener(router, limits=limits) as port:
                await _stalled_caller(
                    port,
                    b"CONNECT db.default.isthmus:5432 HTTP/1.1\r\nHost: db.default.isthmus\r\n\r\n",
                )


async def test_sni_caller_that_never_reads_is_reset() -> None:
    """The SNI listener relays a ClientHello for an L7 address to an endpoint that then
    sends without end (the gateway never looks past the hello)."""
    hello_ctx = ssl.create_default_context()
    outgoing = ssl.MemoryBIO()
    tls = hello_ctx.wrap_bio(ssl.MemoryBIO(), outgoing, server_hostname="api.default.isthmus")
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    config = ListenerConfig(name="sni", kind="sni", address=IPv4Address("127.0.0.1"), port=0)
    async with serving(partial(_firehose, http=False)) as backend, trio.open_nursery() as nursery:
        router = make_router({API: ("a",)}, cluster=StandInCluster(tcp={API: backend}))
        port = await nursery.start(
            partial(serve_sni_listener, config, router, limits=LIMITS, local_site="a")
        )
        await _stalled_caller(port, outgoing.read())
        nursery.cancel_scope.cancel()


async def test_a_slow_caller_that_keeps_reading_is_not_cut() -> None:
    """Progress, not total time, is bounded: a caller that drains its (small) buffer four
    times per send timeout keeps its connection for many send timeouts in a row, although
    it frees the gateway's kernel buffer too slowly to make the socket writable again."""
    async with _http_gateway() as port:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        stream.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        async with stream:
            await stream.send_all(b"GET /big HTTP/1.1\r\nHost: api.default.isthmus\r\n\r\n")
            got = 0
            with trio.fail_after(HANG_GUARD_S * 2):
                for _ in range(16):  # 16 pauses of a quarter of the timeout: 4 timeouts
                    await trio.sleep(SEND_TIMEOUT_S / 4)
                    data = await stream.receive_some(1 << 20)
                    assert data, "the gateway closed a caller that was reading"
                    got += len(data)
    assert got > 0


async def test_a_caller_taking_a_byte_at_a_time_is_reset() -> None:
    """The case from the field: a reader that takes a byte now and then.  It never lets the
    gateway send more, and acknowledges next to nothing: reset, like one that never reads."""
    async with _http_gateway() as port:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            await sock.connect(("127.0.0.1", port))
            await sock.send(b"GET /big HTTP/1.1\r\nHost: api.default.isthmus\r\n\r\n")
            with trio.fail_after(HANG_GUARD_S):
                for _ in range(100_000):
                    if _tcp_state(sock) == TCP_CLOSE:
                        break
                    await trio.sleep(SEND_TIMEOUT_S / 5)
                    assert await sock.recv(1)
            assert _kernel_sockets(port, sock.getsockname()[1]) == []
            with pytest.raises(ConnectionResetError):
                for _ in range(1000):
                    if not await sock.recv(65536):
                        break


async def test_a_caller_draining_less_than_the_minimum_is_reset() -> None:
    """A reader that does take bytes, a couple of KiB per send timeout (its whole tiny
    buffer twice per timeout), but less than ``MIN_PROGRESS_BYTES``: reset."""
    async with _http_gateway() as port:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        with sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            await sock.connect(("127.0.0.1", port))
            await sock.send(b"GET /big HTTP/1.1\r\nHost: api.default.isthmus\r\n\r\n")
            taken = 0
            with trio.fail_after(HANG_GUARD_S):
                for _ in range(100_000):
                    if _tcp_state(sock) == TCP_CLOSE:
                        break
                    await trio.sleep(SEND_TIMEOUT_S / 2)
                    taken += len(await sock.recv(65536))
            assert taken > 0  # it did read, just too little
            assert _kernel_sockets(port, sock.getsockname()[1]) == []


async def test_unsent_bytes_reports_the_kernel_send_queue() -> None:
    """``unsent_bytes`` sees what the peer has not acknowledged: some while it does not
    read, none once it has read everything."""
    listener = trio.socket.socket()
    with listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        sender = trio.socket.socket()
        with sender:
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
            await sender.connect(listener.getsockname())
            receiver, _ = await listener.accept()
            with receiver:
                assert unsent_bytes(sender) == 0
                sent = 0
                with trio.move_on_after(0.2):  # fill both buffers; the send then blocks
                    for _ in range(1000):
                        sent += await sender.send(PIECE)
                assert unsent_bytes(sender) > 0
                with trio.fail_after(HANG_GUARD_S):
                    got = 0
                    while got < sent:
                        got += len(await receiver.recv(65536))
                    for _ in range(100_000):
                        if unsent_bytes(sender) == 0:
                            break
                        await trio.sleep(0.01)
