"""The admin API: a small JSON-over-HTTP/1.1 endpoint for operators and tests.

Why its own tiny server: the admin port must keep answering when the data path is under
stress, so it shares no code path (and no limits) with the traffic listeners.  It reads:
``GET /healthz``, ``/catalog``, ``/links``, ``/imports``, ``/routes``, ``/metrics``,
``/config``, ``/overlay`` and the overlay map page at ``/`` (whatever views the gateway
registered); a few *queries*, ``GET`` paths that read their query string and may wait
(``/explain?url=...``, bounded like an action); and it has a few *actions*, ``POST`` paths
the gateway registered (``POST /config/reload``), which take no request body and answer a
:class:`Reply`.  Actions live only here, on the admin listener, never on a traffic listener.  A
view answers 200 with its JSON, returns :class:`Text` for another format, or a :class:`Reply` to
choose the status (``/healthz`` answers 503 when the gateway is not healthy), or
:class:`~gateway.admin.sliced.Sliced` to be built a slice per loop step; every JSON answer is
encoded that way, and large ones are rendered one at a time (:mod:`gateway.admin.sliced`).  Bounded
everywhere: request head <= 16 KiB, bodies <= 64 KiB (read and ignored), 10 s to send a
request, 60 s for an action, one response per request, connection closed after
``max_requests``.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

import h11
import trio

from discovery.pacing import paced
from gateway.admin.sliced import Sliced, encode_json, is_large
from overlay.link.listen import open_listeners

log = logging.getLogger("gateway.admin")  # the name it has always logged under

View = Callable[[], Any]  # returns something json.dumps can encode, a Reply, Text or Sliced


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
    #: More response headers (the map page's Content-Security-Policy).
    headers: tuple[tuple[str, str], ...] = ()


Action = Callable[[], Awaitable[Reply]]  # a POST path: does something, says what
#: A GET path that reads its query string (name -> values) and may wait (``/explain``).
Query = Callable[[Mapping[str, list[str]]], Awaitable[Any]]

MAX_HEAD_BYTES = 16 * 1024
MAX_BODY_BYTES = 64 * 1024  # actions take no body; a small one is read and ignored
ACTION_TIMEOUT_S = 60.0  # a reload reads and validates a file: generous, still bounded
REQUEST_TIMEOUT_S = 10.0
MAX_REQUESTS_PER_CONNECTION = 100
MAX_CONNECTIONS = 64
MAX_QUERY_FIELDS = 64


async def serve_admin(
    views: Mapping[str, View],
    *,
    actions: Mapping[str, Action] | None = None,
    queries: Mapping[str, Query] | None = None,
    host: str,
    port: int,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``views`` (path -> zero-argument callable) on ``host:port``.

    ``task_status.started()`` receives the bound port (useful with ``port=0``).
    """
    listeners = await open_listeners(port, host)
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)
    rendering = trio.Lock()
    bound = listeners[0].socket.getsockname()[1]

    async def handle(stream: trio.SocketStream) -> None:
        async with limiter:
            try:
                await _serve_connection(stream, views, actions or {}, queries or {}, rendering)
            except (trio.BrokenResourceError, trio.ClosedResourceError, h11.ProtocolError):
                pass
            finally:
                await trio.aclose_forcefully(stream)

    async with trio.open_nursery() as nursery:
        task_status.started(bound)
        await trio.serve_listeners(handle, listeners, handler_nursery=nursery)


async def _serve_connection(
    stream: trio.abc.Stream,
    views: Mapping[str, View],
    actions: Mapping[str, Action],
    queries: Mapping[str, Query] | None = None,
    rendering: trio.Lock | None = None,
) -> None:
    rendering = trio.Lock() if rendering is None else rendering
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
        # Admin requests never carry bodies we care about; drain to EndOfMessage (bounded).
        body_bytes = 0
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(bytes(await stream.receive_some(MAX_HEAD_BYTES)))
                elif isinstance(event, h11.Data):
                    body_bytes += len(event.data)
                    if body_bytes > MAX_BODY_BYTES:
                        return
                elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                    break
        if request.method == b"POST":
            status, body = await _act(request, actions)
        elif request.method == b"GET" and queries and _path(request) in queries:
            status, body = await _ask(request, queries[_path(request)])
        else:
            status, body = _dispatch(request, views, actions)
        if is_large(body):
            # One large answer rendered at a time, so their slices never pile up in one batch
            # of the loop; small views (``/healthz``) never wait behind one.
            async with rendering:
                status, payload, content_type, extra = await _rendered(request, status, body)
        else:
            status, payload, content_type, extra = await _rendered(request, status, body)
        headers = [
            ("content-type", content_type),
            ("content-length", str(sum(map(len, payload)))),
            ("cache-control", "no-store"),
            # A browser may reach this port (the map page): never sniff a JSON body as HTML.
            ("x-content-type-options", "nosniff"),
            *extra,
        ]
        await stream.send_all(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
        for chunk in payload:  # a large answer's chunks as they are: no copy of the whole
            await stream.send_all(conn.send(h11.Data(data=chunk)) or b"")
        await stream.send_all(conn.send(h11.EndOfMessage()) or b"")
        if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
            return
        conn.start_next_cycle()


async def _rendered(
    request: h11.Request, status: int, body: Any
) -> tuple[int, list[bytes], str, tuple[tuple[str, str], ...]]:
    """Status, payload, content type and extra headers of a view's answer; a :class:`Sliced`
    body is built and any JSON body encoded a slice per loop step (small ones: in one)."""
    if isinstance(body, Sliced):
        try:
            body = await paced(body.steps)
        except Exception as exc:  # a broken view must not take the admin port down
            log.exception("admin view %s failed", _path(request))
            status, body = 500, {"error": f"{type(exc).__name__}: {exc}"}
    if isinstance(body, Text):
        return status, [body.body.encode("utf-8")], body.content_type, body.headers
    return status, await paced(encode_json(body)), "application/json", ()


def _path(request: h11.Request) -> str:
    return request.target.decode("ascii", "replace").split("?", 1)[0]


def _cross_site(request: h11.Request) -> bool:
    """Whether a browser sent this request on behalf of another site's page.

    The admin listener serves a page (the overlay map), so browsers come here; a page of any
    other origin could make a browser POST an action (a "simple" request needs no CORS
    consent).  Browsers name the origin of every cross-origin POST in ``Origin``: refuse one
    that is not this listener's own (``Host``).  Clients that are not browsers
    (``isthmus reload``, curl) send no ``Origin`` and are not affected.
    """
    origin = host = None
    for name, value in request.headers:
        if name == b"origin":
            origin = value.decode("latin-1")
        elif name == b"host":
            host = value.decode("latin-1")
    if origin is None:
        return False
    scheme, _, rest = origin.partition("://")
    return scheme != "http" or host is None or rest.lower() != host.lower()


async def _act(request: h11.Request, actions: Mapping[str, Action]) -> tuple[int, Any]:
    path = _path(request)
    if _cross_site(request):
        return 403, {"error": "admin actions refuse cross-origin requests from browsers"}
    action = actions.get(path)
    if action is None:
        return 404, {"error": f"no admin action at {path}", "actions": sorted(actions)}
    try:
        with trio.fail_after(ACTION_TIMEOUT_S):
            reply = await action()
    except trio.TooSlowError:
        log.error("admin action %s did not finish in %.0fs", path, ACTION_TIMEOUT_S)
        return 504, {"error": f"{path} did not finish in {ACTION_TIMEOUT_S:.0f}s"}
    except Exception as exc:  # a broken action must not take the admin port down
        log.exception("admin action %s failed", path)
        return 500, {"error": f"{type(exc).__name__}: {exc}"}
    return reply.status, reply.body


async def _ask(request: h11.Request, query: Query) -> tuple[int, Any]:
    target = request.target.decode("ascii", "replace")
    params = urllib.parse.parse_qs(target.partition("?")[2], max_num_fields=MAX_QUERY_FIELDS)
    try:
        with trio.fail_after(ACTION_TIMEOUT_S):
            result = await query(params)
    except ValueError as exc:  # parse_qs: too many fields
        return 400, {"error": str(exc)}
    except trio.TooSlowError:
        return 504, {"error": f"{_path(request)} did not finish in {ACTION_TIMEOUT_S:.0f}s"}
    except Exception as exc:  # a broken query must not take the admin port down
        log.exception("admin query %s failed", _path(request))
        return 500, {"error": f"{type(exc).__name__}: {exc}"}
    if isinstance(result, Reply):
        return result.status, result.body
    return 200, result


def _dispatch(
    request: h11.Request, views: Mapping[str, View], actions: Mapping[str, Action]
) -> tuple[int, Any]:
    path = _path(request)
    if request.method != b"GET":
        return 405, {"error": "admin views answer GET; actions POST", "actions": sorted(actions)}
    view = views.get(path)
    if path in actions and view is None:
        return 405, {"error": f"{path} is an action: use POST"}
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
