"""Forward one request to an HTTP/2 endpoint (h2c, prior knowledge) as a stream on the
endpoint's pooled connection.

Theory of operation
-------------------
The pool keeps one ``H2Connection`` (client role) per HTTP/2 endpoint; each request is one
stream on it.  The stream is opened with the request's HTTP/2 header block minus the internal
``isthmus-*`` headers; when the body is already known to be empty the HEADERS frame carries
END_STREAM.  Otherwise a :class:`~gateway.upstream.endpoint_h1.BodyPump` streams the body
(and its trailers, which HTTP/2 carries natively -- gRPC depends on them) while the response
is read, so bidirectional streaming works.  Flow control is the connection's: a slow endpoint
slows the caller, and a slow caller slows the endpoint.

The response head is validated (:func:`~gateway.http.transcode.h2_response_to_h1` rules: a
valid ``:status``, no connection-specific fields, no CR/LF/NUL), its Content-Length is checked
against the DATA that follows, and trailers are passed on.

When the response is complete the exchange is over: a request body still going out (an
endpoint that answered early) is stopped and the stream reset, as RFC 9113 section 8.1
allows.

Retry, once and only while no body byte was taken from the caller: REFUSED_STREAM (the
endpoint did no work); a connection that was already going away when the stream was opened;
and, for idempotent methods, a connection the endpoint closed before answering (the HTTP/2
form of a stale keep-alive connection).  The retry dials a new connection if need be.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from discovery.model import Endpoint
from gateway.http.errors import BadRequest, MalformedHeaders, UpstreamProtocolError
from gateway.http.exchange import READ_SIZE, Body, EmptyBody, Request, Response, ResponseWriter
from gateway.http.h2_adapter import H2StreamBody
from gateway.http.headers import CONNECTION_SPECIFIC
from gateway.http.message import IDEMPOTENT_METHODS, Headers
from gateway.http.overlay_headers import strip_request
from gateway.http.transcode import (
    ContentLengthCounter,
    declared_content_length,
    h2_response_to_h1,
    h2_trailers_to_h1,
)
from gateway.upstream.endpoint_h1 import BodyPump
from gateway.upstream.pool import UpstreamPool
from overlay.h2.stream import ConnectionGone, H2Stream, StreamReset

_BODYLESS_STATUS = frozenset({204, 304})
_WIRE_ERRORS = (StreamReset, ConnectionGone, trio.ClosedResourceError)


def request_headers(request: Request) -> Headers:
    """The header block to send: pseudo-headers, then regular fields without the internal
    headers and without connection-specific fields (``te: trailers`` is kept)."""
    if request.is_connect or request.is_websocket:
        raise BadRequest("CONNECT is a tunnel, not an HTTP request to forward")
    stripped = strip_request(request)
    regular = tuple(
        (n, v)
        for n, v in stripped.headers
        if n not in CONNECTION_SPECIFIC or (n == b"te" and v.lower() == b"trailers")
    )
    return Request(
        stripped.method, stripped.scheme, stripped.authority, stripped.path, regular
    ).h2_headers()


def body_known_empty(body: Body) -> bool:
    """True if ``body`` has certainly ended without data (no wait, no read)."""
    if isinstance(body, EmptyBody):
        return True
    if isinstance(body, H2StreamBody):
        stats = body.stream.statistics()
        return stats.remote_ended and stats.buffered == 0 and not body.stream.trailers
    return False


async def forward_h2(
    pool: UpstreamPool,
    endpoint: Endpoint,
    request: Request,
    body: Body,
    writer: ResponseWriter,
    *,
    connect_timeout: float,
) -> None:
    """Send ``request`` to ``endpoint`` over HTTP/2 and stream the response into ``writer``."""
    headers = request_headers(request)
    declared = declared_content_length(request.headers, MalformedHeaders)
    pump = BodyPump(body, ContentLengthCounter(declared))
    ended = body_known_empty(body)
    if ended:
        pump.counter.end()
    for attempt in (1, 2):
        conn = await pool.h2_connection(endpoint, connect_timeout=connect_timeout)
        try:
            stream = await conn.open_stream(headers, end_stream=ended)
        except ConnectionGone:
            if attempt == 1:
                continue
            raise
        try:
            await _exchange(stream, request, pump, writer, ended=ended)
            return
        except StreamReset as exc:
            retry = exc.refused and pump.pulled == 0 and not writer.head_sent
            if not (retry and attempt == 1):
                raise
        except ConnectionGone:
            # The endpoint closed the connection (GOAWAY, idle close) before answering: like a
            # stale HTTP/1.1 keep-alive connection, replay an idempotent, untouched request.
            retry = (
                request.method in IDEMPOTENT_METHODS and pump.pulled == 0 and not writer.head_sent
            )
            if not (retry and attempt == 1):
                raise
        finally:
            await stream.aclose()
    raise AssertionError("unreachable")  # pragma: no cover


async def _exchange(
    stream: H2Stream, request: Request, pump: BodyPump, writer: ResponseWriter, *, ended: bool
) -> None:
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        if not ended:
            nursery.start_soon(
                pump.run, stream.send_all, _ender(stream), nursery.cancel_scope, _WIRE_ERRORS
            )
        try:
            await _relay_response(stream, request, writer)
        except Exception as exc:
            failure = exc
            nursery.cancel_scope.cancel()
        else:
            # The response is complete: the exchange is over even if the endpoint answered
            # before reading the whole body (closing the stream resets the rest).
            pump.stop()
    if pump.error is not None:
        raise pump.error
    if failure is not None:
        raise failure


def _ender(stream: H2Stream) -> Callable[[Headers], Awaitable[None]]:
    async def end(trailers: Headers) -> None:
        if trailers:
            await stream.send_trailers(trailers)
        else:
            await stream.send_eof()

    return end


async def _relay_response(stream: H2Stream, request: Request, writer: ResponseWriter) -> None:
    head = h2_response_to_h1(await stream.response_headers())
    response = Response(head.status, head.headers)
    bodyless = request.method == b"HEAD" or head.status in _BODYLESS_STATUS
    counter = ContentLengthCounter(
        None if bodyless else declared_content_length(head.headers, UpstreamProtocolError),
        UpstreamProtocolError,
    )
    stats = stream.statistics()
    if stats.remote_ended and stats.buffered == 0 and not stream.trailers:
        counter.end()
        await writer.send_head(response, end_stream=True)
        return
    await writer.send_head(response)
    while data := await stream.receive_some(READ_SIZE):
        counter.data(len(data))
        await writer.send_data(data)
    counter.end()
    await writer.send_end(h2_trailers_to_h1(stream.trailers or (), from_upstream=True))
