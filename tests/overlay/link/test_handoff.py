"""The worker/supervisor hand-off on real loopback sockets with real mTLS links.

What a peer notices: a link it dials with the worker SNI is served by the worker that
accepted it, any other link (no SNI: a supervisor, a single-process gateway, an old version)
by the supervisor, with the same verification either way -- also when the ClientHello
arrives in pieces.  What an operator notices: garbage or a stalled hello on the east-west
port is closed and logged like a rejected link, never handed on; a full supervisor refuses
at once instead of queueing; a supervisor that is gone makes the hand-off fail cleanly.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import pytest
import trio

from foundation.spiffe_id import SpiffeId
from overlay.identity.rotation import Identity
from overlay.link.accept import LinkHandler, accept_link_stream, serve_links
from overlay.link.client_hello import (
    ClientHelloTimeout,
    ClientHelloTooLarge,
    NotTls,
    TruncatedClientHello,
)
from overlay.link.dial import open_link
from overlay.link.handoff import (
    WORKER_LINK_SNI,
    HandoffBusy,
    HandoffFailed,
    HandoffStats,
    hand_off,
    is_worker_link,
    receive_handoffs,
    worker_handoff,
)
from overlay.link.link import Link, LinkError
from tests.overlay.identity.cases import CA_B, SERVER_CHAIN, SERVER_ID, SERVER_KEY, TRUSTED
from tests.overlay.identity.certfactory import identity, key_pem, make_leaf, pem

HOST = "127.0.0.1"
CLIENT_ID = "spiffe://b.test/gateway/client"
CLIENT_CHAIN, CLIENT_KEY = make_leaf(CA_B, uris=[CLIENT_ID])
EXPECTED = SpiffeId.parse(SERVER_ID)
GUARD_S = 30  # hang guard for real-time waits (every configured timeout here is <= 5 s)
ROOT = Path(__file__).resolve().parents[3]  # the repository: the child runs from it


def server_identity() -> Identity:
    return identity(SERVER_CHAIN, SERVER_KEY, dict(TRUSTED))


def client_identity() -> Identity:
    return identity(CLIENT_CHAIN, CLIENT_KEY, dict(TRUSTED))


def client_hello(server_name: str | None) -> bytes:
    """The ClientHello a real OpenSSL client sends first (for byte-level tests)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    out = ssl.MemoryBIO()
    tls = ctx.wrap_bio(ssl.MemoryBIO(), out, server_hostname=server_name)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()


@asynccontextmanager
async def tcp_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    """(client, server) ends of one loopback TCP connection."""
    [listener] = await trio.open_tcp_listeners(0, host=HOST)
    async with listener:
        client = await trio.open_tcp_stream(HOST, listener.socket.getsockname()[1])
        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        server = await listener.accept()
    async with client, server:
        yield client, server


def echo(tag: str, served: list[str], hold: trio.Event | None = None) -> LinkHandler:
    """A link handler answering ``<tag>:<what it got>``; waits for ``hold`` if given."""

    async def handler(link: Link) -> None:
        served.append(tag)
        data = await link.stream.receive_some(100)
        await link.stream.send_all(tag.encode() + b":" + data)
        if hold is not None:
            await hold.wait()

    return handler


async def ask(port: int, server_name: str | None) -> bytes:
    """Dial a real link (mTLS, SPIFFE check) and return what the far end echoes."""
    link = await open_link(
        HOST, port, identity=client_identity(), expected=EXPECTED, server_name=server_name
    )
    async with link:
        await link.stream.send_all(b"hi")
        with trio.fail_after(GUARD_S):
            return await link.stream.receive_some(100)


async def closed_by_peer(tcp: trio.SocketStream) -> bool:
    """Whether the far end closed (EOF, or a reset: it closed with our bytes unread)."""
    try:
        return await tcp.receive_some(100) == b""
    except trio.BrokenResourceError:
        return True


def rejections(caplog: pytest.LogCaptureFixture) -> list[BaseException]:
    return [
        r.error  # type: ignore[attr-defined]
        for r in caplog.records
        if r.name == "isthmus.link" and r.getMessage().startswith("rejected inbound link")
    ]


# -- is_worker_link on the bytes of a real ClientHello --------------------------------------


async def test_worker_sni_is_recognised_and_other_hellos_are_not() -> None:
    for server_name, expected in [(WORKER_LINK_SNI, True), (None, False), ("a.test", False)]:
        async with tcp_pair() as (client, server):
            await client.send_all(client_hello(server_name))
            with trio.fail_after(GUARD_S):
                assert await is_worker_link(server.socket, timeout_s=5) is expected


async def test_peek_consumes_nothing() -> None:
    hello = client_hello(WORKER_LINK_SNI)
    async with tcp_pair() as (client, server):
        await client.send_all(hello)
        with trio.fail_after(GUARD_S):
            assert await is_worker_link(server.socket, timeout_s=5)
            received = b""
            while len(received) < len(hello):
                received += await server.receive_some(len(hello) - len(received))
    assert received == hello


async def test_hello_split_over_several_writes_is_recognised() -> None:
    hello = client_hello(WORKER_LINK_SNI)
    # inside the record header, inside the hello, the rest
    pieces = [hello[:3], hello[3:40], hello[40 : len(hello) // 2], hello[len(hello) // 2 :]]
    async with tcp_pair() as (client, server):

        async def send_slowly() -> None:
            for piece in pieces:
                await trio.sleep(0.05)  # each piece its own segment, after the peek waits
                await client.send_all(piece)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_slowly)
            with trio.fail_after(GUARD_S):
                assert await is_worker_link(server.socket, timeout_s=10)
        # SO_RCVLOWAT is back at 1: a 1-byte read does not wait for more bytes
        await client.send_all(b"x")
        with trio.fail_after(GUARD_S):
            data = b""
            while not data.endswith(b"x"):
                data += await server.receive_some(1 << 16)
        assert data == hello + b"x"
        assert server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT) == 1


async def test_garbage_raises_not_tls() -> None:
    async with tcp_pair() as (client, server):
        await client.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        with trio.fail_after(GUARD_S), pytest.raises(NotTls):
            await is_worker_link(server.socket, timeout_s=5)


async def test_hello_closed_halfway_raises_truncated() -> None:
    hello = client_hello(WORKER_LINK_SNI)
    async with tcp_pair() as (client, server):
        await client.send_all(hello[:50])
        await client.send_eof()
        with trio.fail_after(GUARD_S), pytest.raises(TruncatedClientHello):
            await is_worker_link(server.socket, timeout_s=10)


async def test_stalled_hello_times_out(autojump_clock: trio.abc.Clock) -> None:
    hello = client_hello(WORKER_LINK_SNI)
    async with tcp_pair() as (client, server):
        await client.send_all(hello[:50])
        start = trio.current_time()
        with pytest.raises(ClientHelloTimeout):
            await is_worker_link(server.socket, timeout_s=7)
        assert trio.current_time() - start == pytest.approx(7)


async def test_silent_connection_times_out(autojump_clock: trio.abc.Clock) -> None:
    async with tcp_pair() as (_client, server):
        with pytest.raises(ClientHelloTimeout):
            await is_worker_link(server.socket, timeout_s=7)


async def test_hello_over_max_bytes_is_refused() -> None:
    async with tcp_pair() as (client, server):
        await client.send_all(client_hello(WORKER_LINK_SNI))
        with trio.fail_after(GUARD_S), pytest.raises(ClientHelloTooLarge):
            await is_worker_link(server.socket, timeout_s=5, max_bytes=64)


# -- a worker's listener and the supervisor's receiver, with real mTLS links ----------------


@dataclass
class Site:
    """One worker listener handing off over a real socketpair to a supervisor receiver."""

    port: int
    stats: HandoffStats
    served: list[str] = field(default_factory=list)


@asynccontextmanager
async def site(
    *,
    max_connections: int = 16,
    hold: trio.Event | None = None,
    peek_timeout_s: float = 5,
    max_pending: int = 16,
    close_supervisor: bool = False,
) -> AsyncIterator[Site]:
    worker_end, supervisor_end = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    stats = HandoffStats()
    served: list[str] = []
    worker_id, supervisor_id = server_identity(), server_identity()
    with worker_end, supervisor_end:
        async with trio.open_nursery() as nursery:
            if close_supervisor:
                supervisor_end.close()
            else:
                await nursery.start(
                    partial(
                        receive_handoffs,
                        supervisor_end,
                        partial(
                            accept_link_stream,
                            handler=echo("supervisor", served, hold),
                            identity=supervisor_id,
                            authorize=lambda _sid: True,
                            handshake_timeout=5,
                        ),
                        max_connections=max_connections,
                        stats=stats,
                    )
                )
            listeners = await nursery.start(
                partial(
                    serve_links,
                    echo("worker", served, hold),
                    host=HOST,
                    port=0,
                    identity=worker_id,
                    authorize=lambda _sid: True,
                    handshake_timeout=5,
                    handoff=worker_handoff(
                        worker_end, timeout_s=peek_timeout_s, max_pending=max_pending
                    ),
                )
            )
            yield Site(listeners[0].socket.getsockname()[1], stats, served)
            nursery.cancel_scope.cancel()


async def test_worker_links_stay_and_other_links_are_served_by_the_supervisor() -> None:
    async with site() as s:
        assert await ask(s.port, WORKER_LINK_SNI) == b"worker:hi"
        assert await ask(s.port, None) == b"supervisor:hi"
        assert await ask(s.port, "some-other-name.test") == b"supervisor:hi"
    assert s.served == ["worker", "supervisor", "supervisor"]
    assert s.stats.received == 2
    assert s.stats.active == 0


@asynccontextmanager
async def splitting_relay(target: int, cuts: list[int]) -> AsyncIterator[int]:
    """A TCP relay that forwards the client's first write in pieces, one segment each."""

    async def pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while data := await source.receive_some(1 << 16):
                await sink.send_all(data)
            await sink.send_eof()

    async def handle(client: trio.SocketStream) -> None:
        upstream = await trio.open_tcp_stream(HOST, target)
        upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
        async with client, upstream:
            first = await client.receive_some(1 << 16)
            for start, end in zip([0, *cuts], [*cuts, len(first)], strict=True):
                await upstream.send_all(first[start:end])
                await trio.sleep(0.05)
            with trio.move_on_after(GUARD_S):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(pump, client, upstream)
                    nursery.start_soon(pump, upstream, client)

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host=HOST))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def test_split_hello_through_the_listener_still_completes_the_mtls_handshake() -> None:
    async with site() as s, splitting_relay(s.port, [3, 60, 200]) as relay:
        assert await ask(relay, WORKER_LINK_SNI) == b"worker:hi"
        assert await ask(relay, None) == b"supervisor:hi"
    assert s.served == ["worker", "supervisor"]


async def test_garbage_on_the_east_west_port_is_rejected_and_logged_not_handed_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "isthmus.link")
    async with site() as s:
        tcp = await trio.open_tcp_stream(HOST, s.port)
        async with tcp:
            await tcp.send_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            with trio.fail_after(GUARD_S):
                assert await closed_by_peer(tcp)  # closed by the worker
        assert await ask(s.port, None) == b"supervisor:hi"  # the listener serves on
    assert [type(e) for e in rejections(caplog)] == [NotTls]
    assert s.stats.received == 1
    assert s.served == ["supervisor"]


async def test_stalled_hello_on_the_east_west_port_is_closed_at_its_timeout(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "isthmus.link")
    async with site(peek_timeout_s=7) as s:
        tcp = await trio.open_tcp_stream(HOST, s.port)
        async with tcp:
            await tcp.send_all(client_hello(WORKER_LINK_SNI)[:50])
            start = trio.current_time()
            with trio.fail_after(60):
                assert await closed_by_peer(tcp)
            assert trio.current_time() - start == pytest.approx(7)
    assert [type(e) for e in rejections(caplog)] == [ClientHelloTimeout]
    assert s.stats.received == 0


async def test_connections_waiting_for_a_hello_are_bounded(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "isthmus.link")
    async with site(peek_timeout_s=7, max_pending=1) as s:
        stalled = await trio.open_tcp_stream(HOST, s.port)
        async with stalled:
            await stalled.send_all(client_hello(WORKER_LINK_SNI)[:50])
            await trio.sleep(1)  # the worker peeks it: the one pending slot is taken
            start = trio.current_time()
            extra = await trio.open_tcp_stream(HOST, s.port)
            async with extra:
                await extra.send_all(client_hello(WORKER_LINK_SNI))
                with trio.fail_after(60):
                    assert await closed_by_peer(extra)
                assert trio.current_time() - start < 1  # refused at once, not at the timeout
            with trio.fail_after(60):
                assert await closed_by_peer(stalled)
        # the slot is free again
        assert await ask(s.port, WORKER_LINK_SNI) == b"worker:hi"
    assert [type(e) for e in rejections(caplog)] == [HandoffBusy, ClientHelloTimeout]


async def test_full_supervisor_refuses_at_once_and_keeps_serving_the_others() -> None:
    hold = trio.Event()
    async with site(max_connections=1, hold=hold) as s:
        first = await open_link(HOST, s.port, identity=client_identity(), expected=EXPECTED)
        async with first:
            await first.stream.send_all(b"hi")
            with trio.fail_after(GUARD_S):
                assert await first.stream.receive_some(100) == b"supervisor:hi"
            with trio.fail_after(GUARD_S), pytest.raises(LinkError):
                await ask(s.port, None)  # over the cap: reset before TLS completes
            assert s.stats.refused == 1
            assert await ask(s.port, WORKER_LINK_SNI) == b"worker:hi"  # not counted
        hold.set()
    assert s.served == ["supervisor", "worker"]


async def test_hand_off_fails_cleanly_when_the_supervisor_is_gone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "isthmus.link")
    async with site(close_supervisor=True) as s:
        with trio.fail_after(GUARD_S), pytest.raises(LinkError):
            await ask(s.port, None)
        assert await ask(s.port, WORKER_LINK_SNI) == b"worker:hi"
    assert [type(e) for e in rejections(caplog)] == [HandoffFailed]


async def test_an_invalid_datagram_is_dropped_and_the_next_hand_off_served() -> None:
    worker_end, supervisor_end = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    stats = HandoffStats()
    got: list[bytes] = []
    done = trio.Event()

    async def on_connection(tcp: trio.SocketStream) -> None:
        got.append(await tcp.receive_some(100))
        done.set()

    with worker_end, supervisor_end:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(receive_handoffs, supervisor_end, on_connection, stats=stats)
            )
            await worker_end.send(b"no fd here")
            other_end, unix = socket.socketpair()  # a socket, but not TCP
            with other_end:
                await hand_off(worker_end, trio.socket.from_stdlib_socket(unix))
            async with tcp_pair() as (client, server):
                await hand_off(worker_end, server.socket)
                await client.send_all(b"hello")
                with trio.fail_after(GUARD_S):
                    await done.wait()
            nursery.cancel_scope.cancel()
    assert got == [b"hello"]
    assert stats.invalid == 2
    assert stats.received == 1


async def test_handed_off_links_outlive_a_cancelled_receiver() -> None:
    """The supervisor replaces a worker's receiver; links it already handed on stay up."""
    worker_end, supervisor_end = trio.socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

    async def echo_all(link: Link) -> None:
        while data := await link.stream.receive_some(100):
            await link.stream.send_all(data)

    on_connection: Callable[[trio.SocketStream], Awaitable[None]] = partial(
        accept_link_stream,
        handler=echo_all,
        identity=server_identity(),
        authorize=lambda _sid: True,
        handshake_timeout=5,
    )
    receiver = trio.CancelScope()
    receiver_gone = trio.Event()

    async def run_receiver(links: trio.Nursery) -> None:
        with receiver:
            await receive_handoffs(supervisor_end, on_connection, handler_nursery=links)
        receiver_gone.set()

    async def accept_and_hand_off(listener: trio.SocketListener) -> None:
        tcp = await listener.accept()
        await hand_off(worker_end, tcp.socket)

    async def roundtrip(link: Link, data: bytes) -> bytes:
        await link.stream.send_all(data)
        with trio.fail_after(GUARD_S):
            return await link.stream.receive_some(100)

    with worker_end, supervisor_end:
        [listener] = await trio.open_tcp_listeners(0, host=HOST)
        async with listener, trio.open_nursery() as links:
            links.start_soon(run_receiver, links)
            links.start_soon(accept_and_hand_off, listener)
            port = listener.socket.getsockname()[1]
            link = await open_link(HOST, port, identity=client_identity(), expected=EXPECTED)
            async with link:
                assert await roundtrip(link, b"one") == b"one"
                receiver.cancel()
                with trio.fail_after(GUARD_S):
                    await receiver_gone.wait()
                assert await roundtrip(link, b"two") == b"two"


async def test_a_connection_handed_to_another_process_becomes_a_verified_link(
    tmp_path: Path,
) -> None:
    """The real boundary: the fd crosses into a separate process (the supervisor), which
    runs the mTLS handshake and the SPIFFE checks on it."""
    (tmp_path / "chain.pem").write_bytes(pem(SERVER_CHAIN))
    (tmp_path / "key.pem").write_bytes(key_pem(SERVER_KEY))
    for domain, anchors in TRUSTED.items():
        (tmp_path / f"bundle-{domain}.pem").write_bytes(pem(anchors))
    worker_end, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)

    argv = [sys.executable, "-m", "tests.overlay.link.handoff_child"]
    with worker_end, child_end:
        child = await trio.lowlevel.open_process(
            [*argv, str(child_end.fileno()), str(tmp_path)],
            cwd=ROOT,
            pass_fds=[child_end.fileno()],
            stdout=subprocess.PIPE,
        )
        try:
            assert child.stdout is not None
            said = b""
            with trio.fail_after(GUARD_S):
                while not said.endswith(b"\n") and (chunk := await child.stdout.receive_some()):
                    said += chunk
            assert said == b"ready\n"
            child_end.close()  # the child holds its own copy
            dgram = trio.socket.from_stdlib_socket(worker_end)
            async with trio.open_nursery() as nursery:
                listeners = await nursery.start(
                    partial(
                        serve_links,
                        echo("worker", []),
                        host=HOST,
                        port=0,
                        identity=server_identity(),
                        authorize=lambda _sid: True,
                        handshake_timeout=5,
                        handoff=worker_handoff(dgram, timeout_s=5),
                    )
                )
                port = listeners[0].socket.getsockname()[1]
                assert await ask(port, None) == b"child:hi"
                assert await ask(port, WORKER_LINK_SNI) == b"worker:hi"
                nursery.cancel_scope.cancel()
        finally:
            child.kill()  # our own child, by its handle
            with trio.CancelScope(shield=True), trio.move_on_after(GUARD_S):
                await child.wait()
