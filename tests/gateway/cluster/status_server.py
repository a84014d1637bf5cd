"""A real HTTP/1.1 endpoint that answers every request with one fixed status (a broken
instance for outlier-detection tests), counting what it answered."""

from __future__ import annotations

from functools import partial

import trio

MAX_HEAD = 64 * 1024


async def _connection(stream: trio.SocketStream, *, status: int, seen: list[int]) -> None:
    buffer = b""
    with trio.move_on_after(30):  # hang guard: no test keeps a connection this long
        while len(buffer) <= MAX_HEAD:
            data = await stream.receive_some(4096)
            if not data:
                return
            buffer += data
            while b"\r\n\r\n" in buffer:  # requests without a body (the tests send GETs)
                _, buffer = buffer.split(b"\r\n\r\n", 1)
                seen.append(status)
                await stream.send_all(
                    f"HTTP/1.1 {status} Failing\r\ncontent-length: 4\r\n\r\nfail".encode()
                )


async def serve_status(
    host: str,
    status: int,
    seen: list[int],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host`` (a free port), answer ``status``; ``task_status.started(port)``."""
    listeners = await trio.open_tcp_listeners(0, host=host)
    port: int = listeners[0].socket.getsockname()[1]
    task_status.started(port)
    await trio.serve_listeners(partial(_connection, status=status, seen=seen), listeners)


async def _held(stream: trio.SocketStream, *, release: trio.Event, seen: list[int]) -> None:
    buffer = b""
    with trio.move_on_after(30):  # hang guard
        while b"\r\n\r\n" not in buffer and len(buffer) <= MAX_HEAD:
            data = await stream.receive_some(4096)
            if not data:
                return
            buffer += data
        seen.append(200)
        await release.wait()
        await stream.send_all(b"HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\nheld")


async def serve_held(
    host: str,
    release: trio.Event,
    seen: list[int],
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """An endpoint that answers each request only once ``release`` is set (a busy one)."""
    listeners = await trio.open_tcp_listeners(0, host=host)
    port: int = listeners[0].socket.getsockname()[1]
    task_status.started(port)
    await trio.serve_listeners(partial(_held, release=release, seen=seen), listeners)
