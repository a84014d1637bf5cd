"""The demo's example services: an HTTP whoami/echo and a TCP echo.

Why they exist: the demo (and the end-to-end tests) need real endpoints in each site whose
answers show *which site* served a request, so failover is visible with plain curl. They are
ordinary programs on ordinary sockets -- nothing in them knows about Isthmus -- which is the
point: the gateway must carry unmodified traffic to unmodified services.

* ``serve_http_echo``: every request gets ``200`` with a JSON body
  ``{"site", "method", "path", "headers", "body_length", "trailers"}``; the body is read
  streaming (counted, never stored). HEAD gets the headers only.
* ``serve_tcp_echo``: echoes bytes back; when the caller half-closes, it finishes echoing
  and half-closes too (so half-close through an L4 tunnel is testable).

Run one as ``python -m gateway.demo.services http|http2|tcp --host H --port P --site S``; it prints
``listening <kind> <host>:<port> site=<site>`` once ready (port 0 picks a free port).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from functools import partial

import trio

from foundation.errors import IsthmusError
from gateway.http.exchange import READ_SIZE
from gateway.http.h1_connection import H1Limits
from gateway.http.h1_server import H1ServerConnection
from gateway.http.message import ResponseHead

log = logging.getLogger(__name__)

# Bounded work per connection: requests per keep-alive connection, chunks per body read loop.
MAX_REQUESTS_PER_CONNECTION = 10_000


def whoami_body(
    site: str,
    method: bytes,
    target: bytes,
    headers: Sequence[tuple[bytes, bytes]],
    body_length: int,
    trailers: Sequence[tuple[bytes, bytes]] = (),
) -> bytes:
    """The JSON the HTTP echo answers with (pure; shared with tests)."""
    doc = {
        "site": site,
        "method": method.decode("latin-1"),
        "path": target.decode("latin-1"),
        "headers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in headers],
        "body_length": body_length,
        "trailers": [[n.decode("latin-1"), v.decode("latin-1")] for n, v in trailers],
    }
    return json.dumps(doc, sort_keys=True).encode() + b"\n"


async def _http_connection(site: str, limits: H1Limits, stream: trio.SocketStream) -> None:
    conn = H1ServerConnection(stream, limits)
    try:
        for _ in range(MAX_REQUESTS_PER_CONNECTION):
            head = await conn.next_request()
            if head is None:
                break
            length = 0
            while piece := await conn.receive_body():
                length += len(piece)
            body = whoami_body(site, head.method, head.target, head.headers, length, conn.trailers)
            response = ResponseHead(
                200,
                (
                    (b"content-type", b"application/json"),
                    (b"x-isthmus-demo-site", site.encode()),
                ),
            )
            await conn.send_response(response, content_length=len(body), body=body, end=True)
    except IsthmusError as exc:
        await conn.send_error(exc)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await conn.aclose()


async def serve_listener(
    kind: str,
    handler: Callable[[trio.SocketStream], Awaitable[None]],
    host: str,
    port: int,
    site: str,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on ``host:port`` and run ``handler`` per connection; ``started(bound_port)``."""
    listeners = await trio.open_tcp_listeners(port, host=host)
    bound = listeners[0].socket.getsockname()[1]
    log.info("%s for site %s on %s:%d", kind, site, host, bound)
    async with trio.open_nursery() as nursery:
        await nursery.start(trio.serve_listeners, handler, listeners)
        task_status.started(bound)


async def serve_http_echo(
    host: str,
    port: int,
    site: str,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the whoami/echo HTTP/1.1 service; ``task_status.started(bound_port)``."""
    handler = partial(_http_connection, site, H1Limits())
    await serve_listener("http echo", handler, host, port, site, task_status=task_status)


async def _tcp_connection(stream: trio.SocketStream) -> None:
    try:
        while data := await stream.receive_some(READ_SIZE):
            await stream.send_all(data)
        await stream.send_eof()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    finally:
        await stream.aclose()


async def serve_tcp_echo(
    host: str,
    port: int,
    site: str,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve a TCP echo; ``task_status.started(bound_port)``. ``site`` names it in logs."""
    await serve_listener("tcp echo", _tcp_connection, host, port, site, task_status=task_status)


async def _run(kind: str, host: str, port: int, site: str) -> None:
    from gateway.demo.h2_service import serve_h2_echo  # h2_service imports this module

    serve = {"http": serve_http_echo, "http2": serve_h2_echo, "tcp": serve_tcp_echo}[kind]
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(serve, host, port, site))
        print(f"listening {kind} {host}:{bound} site={site}", flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.demo.services", description="Isthmus demo example services"
    )
    parser.add_argument("kind", choices=("http", "http2", "tcp"))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--site", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        trio.run(_run, args.kind, args.host, args.port, args.site)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
