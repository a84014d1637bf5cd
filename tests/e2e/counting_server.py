"""A real HTTP/1.1 endpoint that answers every request with one fixed status and keeps what
it was sent (method, headers, body; content-length or chunked): the counter the retry,
deadline and mirror tests read."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import trio

MAX_HEAD = 64 * 1024
MAX_BODY = 1024 * 1024


@dataclass
class Seen:
    """One request as the endpoint got it."""

    method: str
    headers: dict[str, str]
    body: bytes
    owner: object = None  # what ``Counting.owner_of`` said of the connection


@dataclass
class Counting:
    status: int
    name: str
    seen: list[Seen] = field(default_factory=list)
    delay_s: float = 0.0  # held this long before the answer (a request in flight)
    in_flight: int = 0
    # Who opened a connection (e.g. which gateway worker process), asked once per connection;
    # requests held now, by that owner.
    owner_of: Callable[[trio.SocketStream], object] | None = None
    in_flight_by: dict[object, int] = field(default_factory=dict)
    # Hang guard of one connection; a gateway keeps its upstream connections for reuse, so a
    # test that runs longer must not cut them while a request is held on one.
    connection_guard_s: float = 30.0


async def _connection(stream: trio.SocketStream, *, endpoint: Counting) -> None:
    # The caller may go away (a gateway killed by a test): the others are still served.
    owner = endpoint.owner_of(stream) if endpoint.owner_of is not None else None
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await _serve(stream, endpoint, owner)


async def _serve(stream: trio.SocketStream, endpoint: Counting, owner: object = None) -> None:
    buffer = b""
    with trio.move_on_after(endpoint.connection_guard_s):  # hang guard (see Counting)
        while True:
            while b"\r\n\r\n" not in buffer:
                if len(buffer) > MAX_HEAD:
                    return
                data = await stream.receive_some(65536)
                if not data:
                    return
                buffer += data
            head, buffer = buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            method = lines[0].split(" ", 1)[0]
            headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            if "chunked" in headers.get("transfer-encoding", "").lower():
                chunked = await _read_chunked(stream, buffer)
                if chunked is None:
                    return
                body, buffer = chunked
            else:
                length = min(int(headers.get("content-length", "0")), MAX_BODY)
                while len(buffer) < length:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                body, buffer = buffer[:length], buffer[length:]
            endpoint.seen.append(Seen(method, headers, body, owner))
            if endpoint.delay_s:
                endpoint.in_flight += 1
                by = endpoint.in_flight_by
                by[owner] = by.get(owner, 0) + 1
                try:
                    await trio.sleep(endpoint.delay_s)
                finally:
                    endpoint.in_flight -= 1
                    by[owner] -= 1
            reply = endpoint.name.encode()
            await stream.send_all(
                b"HTTP/1.1 %d Counted\r\ncontent-length: %d\r\n\r\n%s"
                % (endpoint.status, len(reply), reply)
            )


async def _read_chunked(stream: trio.SocketStream, buffer: bytes) -> tuple[bytes, bytes] | None:
    """A chunked body (trailers skipped) and what follows it; None: the caller went away or
    sent more than ``MAX_BODY``."""
    body = b""

    async def line() -> bytes | None:
        nonlocal buffer
        while b"\r\n" not in buffer:
            if len(buffer) > MAX_HEAD:
                return None
            data = await stream.receive_some(65536)
            if not data:
                return None
            buffer += data
        out, buffer = buffer.split(b"\r\n", 1)
        return out

    while True:
        size_line = await line()
        if size_line is None:
            return None
        size = int(size_line.split(b";", 1)[0], 16)
        if size == 0:
            while (trailer := await line()) is not None and trailer:
                pass
            return body, buffer
        while len(buffer) < size + 2:
            data = await stream.receive_some(65536)
            if not data or len(body) + size > MAX_BODY:
                return None
            buffer += data
        body, buffer = body + buffer[:size], buffer[size + 2 :]


async def serve_counting(
    host: str, endpoint: Counting, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
) -> None:
    """Listen on ``host`` (a free port) as ``endpoint``; ``task_status.started(port)``."""
    listeners = await trio.open_tcp_listeners(0, host=host)
    port: int = listeners[0].socket.getsockname()[1]
    task_status.started(port)
    await trio.serve_listeners(partial(_connection, endpoint=endpoint), listeners)
