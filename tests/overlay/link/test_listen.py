"""``open_listeners`` / ``reserve_port`` on real loopback sockets.

What an operator notices: a gateway started twice on one port still fails (no silent
sharing) unless the process opted in to ``SO_REUSEPORT``; workers that opted in share the
port and the kernel spreads connections over all of them; a port reserved by the supervisor
(port 0 resolved once) can be bound by every worker and never swallows a connection itself.
"""

from __future__ import annotations

import errno
from collections.abc import Iterator

import pytest
import trio

from overlay.link.listen import open_listeners, reserve_port, reuse_port_enabled, set_reuse_port

HOST = "127.0.0.1"
CONNECTIONS = 32  # all routed to one of two sockets by chance: 2**-31


@pytest.fixture(autouse=True)
def _reuse_port_off() -> Iterator[None]:
    """The switch is process-wide: every test starts and ends with it off."""
    set_reuse_port(False)
    yield
    set_reuse_port(False)


def port_of(listeners: list[trio.SocketListener]) -> int:
    port: int = listeners[0].socket.getsockname()[1]
    return port


async def accept_counts(groups: list[list[trio.SocketListener]], connections: int) -> list[int]:
    """Connect ``connections`` times to the groups' port; how many each group accepted."""
    counts = [0] * len(groups)
    accepted = trio.Semaphore(0)

    async def accept_loop(index: int, listener: trio.SocketListener) -> None:
        while True:
            stream = await listener.accept()
            counts[index] += 1
            await stream.aclose()
            accepted.release()

    port = port_of(groups[0])
    with trio.fail_after(30):  # hang guard only
        async with trio.open_nursery() as nursery:
            for index, group in enumerate(groups):
                for listener in group:
                    nursery.start_soon(accept_loop, index, listener)
            clients = [await trio.open_tcp_stream(HOST, port) for _ in range(connections)]
            for _ in range(connections):
                await accepted.acquire()
            for client in clients:
                await client.aclose()
            nursery.cancel_scope.cancel()
    return counts


async def test_default_listener_refuses_a_second_bind_on_its_port() -> None:
    first = await open_listeners(0, HOST)
    try:
        assert not reuse_port_enabled()
        with pytest.raises(OSError) as caught:
            await open_listeners(port_of(first), HOST)
        assert caught.value.errno == errno.EADDRINUSE
    finally:
        for listener in first:
            await listener.aclose()


async def test_reuse_port_lets_two_listeners_share_a_port_and_both_accept() -> None:
    set_reuse_port(True)
    first = await open_listeners(0, HOST)
    second = await open_listeners(port_of(first), HOST)
    try:
        assert port_of(second) == port_of(first)
        counts = await accept_counts([first, second], CONNECTIONS)
    finally:
        for listener in first + second:
            await listener.aclose()
    assert sum(counts) == CONNECTIONS
    assert all(count > 0 for count in counts), counts


async def test_reuse_port_does_not_let_a_plain_listener_join() -> None:
    """Only sockets that all set the option share: a process that did not opt in (another
    gateway started by mistake) is refused, not silently given half the connections."""
    set_reuse_port(True)
    shared = await open_listeners(0, HOST)
    set_reuse_port(False)
    try:
        with pytest.raises(OSError) as caught:
            await open_listeners(port_of(shared), HOST)
        assert caught.value.errno == errno.EADDRINUSE
    finally:
        for listener in shared:
            await listener.aclose()


async def test_reserved_port_is_shared_by_listeners_and_takes_no_connection() -> None:
    reserved = reserve_port(HOST, 0)
    try:
        port = reserved.getsockname()[1]
        assert port != 0
        with pytest.raises(OSError):  # not opted in: the reservation holds
            await open_listeners(port, HOST)
        set_reuse_port(True)
        first = await open_listeners(port, HOST)
        second = await open_listeners(port, HOST)
        try:
            # Every connection is accepted by a listening socket: had the kernel given one
            # to the reserved (bound, not listening) socket, it would be refused and
            # open_tcp_stream would fail, or the count would fall short.
            counts = await accept_counts([first, second], CONNECTIONS)
        finally:
            for listener in first + second:
                await listener.aclose()
        assert sum(counts) == CONNECTIONS
    finally:
        reserved.close()


async def test_reserve_port_keeps_a_fixed_port() -> None:
    probe = reserve_port(HOST, 0)
    port = probe.getsockname()[1]
    probe.close()
    reserved = reserve_port(HOST, port)
    try:
        assert reserved.getsockname()[1] == port
    finally:
        reserved.close()
