"""The demo's HTTP/2 (prior knowledge, h2c) whoami/echo service.

Same answer as the HTTP/1.1 echo (:func:`gateway.demo.services.whoami_body`) but spoken over
HTTP/2, so the overlay's transcoding is visible both ways: an HTTP/1.1 caller reaching an
HTTP/2 endpoint and an HTTP/2 caller reaching an HTTP/1.1 one.  Trailers sent by the caller
are echoed in the body and returned as response trailers.
"""

from __future__ import annotations

import logging
from functools import partial

import trio

from gateway.demo.services import serve_listener, whoami_body
from gateway.http.exchange import READ_SIZE
from overlay.h2.connection import H2Connection
from overlay.h2.stream import H2Stream, TunnelError

log = logging.getLogger(__name__)


async def _answer(site: str, stream: H2Stream) -> None:
    headers = dict(stream.request_headers)
    regular = [(n, v) for n, v in stream.request_headers if not n.startswith(b":")]
    length = 0
    while piece := await stream.receive_some(READ_SIZE):
        length += len(piece)
    trailers = list(stream.trailers or ())
    body = whoami_body(
        site,
        headers.get(b":method", b""),
        headers.get(b":path", b""),
        regular,
        length,
        trailers,
    )
    await stream.send_headers(
        [
            (":status", "200"),
            ("content-type", "application/json"),
            ("content-length", str(len(body))),
            ("x-isthmus-demo-site", site),
        ]
    )
    await stream.send_all(body)
    if trailers:
        await stream.send_trailers([(b"x-echo-trailers", str(len(trailers)).encode())])
    else:
        await stream.send_eof()


async def _connection(site: str, tcp: trio.SocketStream) -> None:
    async def handler(stream: H2Stream) -> None:
        try:
            await _answer(site, stream)
        except TunnelError as exc:
            log.debug("h2 echo stream failed: %s", exc)

    conn = H2Connection(tcp, client_side=False, handler=handler, ping_interval=None)
    await conn.serve()


async def serve_h2_echo(
    host: str,
    port: int,
    site: str,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the HTTP/2 whoami/echo; ``task_status.started(bound_port)``."""
    handler = partial(_connection, site)
    await serve_listener("h2 echo", handler, host, port, site, task_status=task_status)
