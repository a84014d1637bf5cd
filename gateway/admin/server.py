"""The admin API: a small JSON-over-HTTP/1.1 endpoint for operators and tests.

Why its own tiny server: the admin port must keep answering when the data path is under
stress, so it shares no code path (and no limits) with the traffic listeners.  It is read-only:
``GET /healthz``, ``/catalog``, ``/links``, ``/imports``, ``/routes`` and ``/metrics`` (whatever
views the gateway registered).  A view answers 200 with its JSON, returns :class:`Text` for
another format, or a :class:`Reply` to choose the status (``/healthz`` answers 503 when the
gateway is not healthy).  Bounded everywhere: request head <= 16 KiB, no request bodies,
10 s to send a request, one response per request, connection closed after ``max_requests``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import h11
import trio

log = logging.getLogger("gateway.admin")  # the name it has always logged under

View = Callable[[], Any]  # returns something json.dumps can encode, or a Reply


@dataclass(frozen=True, slots=True)
class Reply:
    """A view's answer with its own HTTP status (the body is JSON-encoded as usual)."""

    status: int
    body: Any


@dataclass(frozen=True, slots=True)
class Text:
    """A view's answer that is not JSON (``/metrics``: the Prometheus text format)."""

    body: str
    content_type: str = "text/plain; charset=utf-8"


MAX_HEAD_BYTES = 16 * 1024
REQUEST_TIMEOUT_S = 10.0
MAX_REQUESTS_PER_CONNECTION = 100
MAX_CONNECTIONS = 64


async def serve_admin(
    views: Mapping[str, View],
    *,
    host: str,
    port: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``views`` (path -> zero-argument callable) on ``host:port``.

    ``task_status.started()`` receives the bound port (useful with ``port=0``).
    """
    listeners = await trio.open_tcp_listeners(port, host=host)
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)
    bound = listeners[0].socket.getsockname()[1]

    async def handle(stream: trio.SocketStream) -> None:
        async with limiter:
            try:
                await _serve_connection(stream, views)
            except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
                pass
            finally:
                await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        task_status.started(bound)
        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)


async def _serve_connection(stream: trio.abc.Stream, views: Mapping[str, View]) -> None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    for _ in range(MAX_REQUESTS_PER_CONNECTION):
        request: h11.Request | None = None
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            while request is None:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(MAX_HEAD_BYTES)
                    conn.receive_data(bytes(data))
                    continue
                if isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.ConnectionClosed):
                    return
        if request is None:
            return
        status, body = _dispatch(request, views)
        # Admin requests never carry bodies we care about; drain to EndOfMessage (bounded).
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(bytes(await stream.receive_some(MAX_HEAD_BYTES)))
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        content_type = "application/json"
        if isinstance(body, Text):
            payload, content_type = body.body.encode("utf-8"), body.content_type
        else:
            payload = (json.dumps(body, indent=2, sort_keys=True, default=str) + "\n").encode()
        headers = [
            ("content-type", content_type),
            ("content-length", str(len(payload))),
            ("cache-control", "no-store"),
        ]
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        await stream.send_all(conn.send(h11.Data(data=payload)) or b"")
        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


def _dispatch(request: h11.Request, views: Mapping[str, View]) -> tuple[int, Any]:
    if request.method != b"GET":
        return 405, {"error": "admin API is read-only; use GET"}
    path = request.target.decode("ascii", "replace").split("?", 1)[0]
    view = views.get(path)
    if view is None:
        return 404, {"error": f"no admin view at {path}", "views": sorted(views)}
    try:
        result = view()
    except Exception as exc:  # a broken view must not take the admin port down
        log.exception("admin view %s failed", path)
        return 500, {"error": f"{type(exc).__name__}: {exc}"}
    if isinstance(result, Reply):
        return result.status, result.body
    return 200, result
