"""Forward one request to an HTTP/1.1 endpoint over a pooled keep-alive connection.

Theory of operation
-------------------
1. **Head.**  The request (HTTP/2 semantics inside the gateway) is checked and turned into an
   HTTP/1.1 head by :func:`~gateway.http.transcode.h2_request_to_h1`, after the internal
   ``isthmus-*`` headers were removed: the endpoint sees ``Host`` = the L7 authority and never
   a header that only gateways may set.  Anything malformed raises before a byte is sent.
2. **Framing.**  A declared Content-Length is kept (and checked against the body with
   ``ContentLengthCounter``).  Without one, the first piece of the body is awaited before the
   head is sent: an empty body (the usual GET) goes out as a body-less request in one write,
   anything else as ``Transfer-Encoding: chunked`` with the first piece in the same write.
   (A caller that sends no body byte until it sees the response head would wait; HTTP/1.1
   endpoints do not do that kind of bidirectional streaming.)
3. **Exchange.**  The rest of the body is pumped to the endpoint by a :class:`BodyPump` task
   while the response is read, so an endpoint that answers early (a 413, a redirect) is heard
   at once and nothing deadlocks on full buffers.  1xx responses are skipped by the codec;
   the final head becomes a :class:`Response` without connection-specific fields
   (:func:`~gateway.http.transcode.h1_response_to_h2`); the body is streamed piece by piece
   (never buffered whole) and chunked trailers are passed on (prohibited fields dropped).
4. **Keep-alive.**  A connection whose exchange completed cleanly both ways goes back to the
   pool; anything else is closed.
5. **Stale connections.**  A pooled connection the backend closed while it sat idle fails
   before any response byte (EOF, reset, or a write error).  If the connection came from the
   pool, the method is idempotent and no body byte was taken from the caller, the request is
   sent again once, on a *new* connection.  Otherwise the failure is an ``UpstreamClosed``.

Timeouts are the caller's (``trio.move_on_at(ctx.deadline)`` in the cluster).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import trio

from discovery.model import Endpoint
from gateway.http.errors import BadRequest, MalformedHeaders, UpstreamClosed, UpstreamProtocolError
from gateway.http.exchange import READ_SIZE, Body, Request, Response, ResponseWriter
from gateway.http.h1_client import H1ClientConnection
from gateway.http.message import IDEMPOTENT_METHODS, Headers, RequestHead, ResponseHead
from gateway.http.overlay_headers import strip_request
from gateway.http.transcode import (
    ContentLengthCounter,
    declared_content_length,
    h1_response_to_h2,
    h1_trailers_to_h2,
    h2_request_to_h1,
    h2_trailers_to_h1,
)
from gateway.upstream.pool import UpstreamPool

#: RFC 9110 section 9.2.2 (TRACE included); only these are replayed on a fresh connection.
#: Methods whose empty body is sent without any framing field (others get Content-Length: 0,
#: which some servers insist on for POST/PATCH).
_NO_BODY_METHODS = frozenset({b"GET", b"HEAD", b"OPTIONS", b"DELETE", b"TRACE"})
_BODYLESS_STATUS = frozenset({204, 304})
_WIRE_ERRORS = (trio.BrokenResourceError, trio.ClosedResourceError)


#: An HTTP/1.1 endpoint that answered before the request body was all sent (nginx's
#: ``return``, an early 4xx) keeps its connection reusable only if the rest of the body still
#: goes out (the endpoint discards it).  At most this many bytes still owed (by the declared
#: length) are sent after the answer, within ``FINISH_GRACE_S``; more, or slower, and the
#: connection is closed as before.  Without it every such answer cost a new connection: a
#: route mirror's copies to another site dialled the endpoint for nine exchanges in ten.
FINISH_MAX_BYTES = 64 * 1024
FINISH_GRACE_S = 0.5


def finish_after_answer(declared: int | None, pulled: int) -> bool:
    """Whether a body still going out when the response is complete is finished rather than
    cut off (see ``FINISH_MAX_BYTES``): only a declared length, and little of it left."""
    return declared is not None and 0 <= declared - pulled <= FINISH_MAX_BYTES


class BodyPump:
    """Copies the caller's body to the upstream in a task of its own.

    Why a task: the response must be read while the body is still going out.  The pump never
    raises into its nursery (which would wrap the error in an exception group and cancel the
    response reader with it): it records a failure of the *caller's* body in ``error`` and
    cancels ``scope``; a failed *write* to the upstream only sets ``send_failed`` -- the
    reader will see the endpoint close (or its early answer) and report that instead.
    ``pulled`` counts body bytes taken from the caller: once it is non-zero the request can
    no longer be replayed.
    """

    def __init__(self, body: Body, counter: ContentLengthCounter) -> None:
        self.body = body
        self.counter = counter
        self.pulled = 0
        self.done = False
        self.send_failed = False
        self.error: Exception | None = None
        self._stopped = False
        self._scope: trio.CancelScope | None = None

    async def pull(self) -> bytes:
        data = await self.body.receive_some(READ_SIZE)
        if data:
            self.pulled += len(data)
            self.counter.data(len(data))
        else:
            self.counter.end()
        return data

    def stop(self, *, finish_small: bool = False) -> None:
        """The response is complete: a body still going out is no longer wanted (the endpoint
        answered early).  The exchange is then unfinished, so its connection is closed --
        unless ``finish_small`` and :func:`finish_after_answer` allow the rest to go out
        (within ``FINISH_GRACE_S``): the connection is then reused."""
        self._stopped = True
        scope = self._scope
        if scope is None or self.done:
            return
        if finish_small and finish_after_answer(self.counter.declared, self.pulled):
            scope.deadline = min(scope.deadline, trio.current_time() + FINISH_GRACE_S)
        else:
            scope.cancel()

    async def run(
        self,
        send: Callable[[bytes], Awaitable[None]],
        end: Callable[[Headers], Awaitable[None]],
        exchange: trio.CancelScope,
        upstream_errors: tuple[type[Exception], ...],
    ) -> None:
        """Pump until the body ends; ``send``/``end`` write to the upstream, whose failures
        are ``upstream_errors`` (anything else is the caller's body failing)."""
        self._scope = scope = trio.CancelScope()  # one per run: a retried request runs again
        if self._stopped:
            scope.cancel()
        with scope:
            try:
                while data := await self.pull():
                    try:
                        await send(data)
                    except upstream_errors:
                        self.send_failed = True
                        return
                trailers = h2_trailers_to_h1(self.body.trailers, from_upstream=False)
                try:
                    await end(trailers)
                except upstream_errors:
                    self.send_failed = True
                    return
                self.done = True
            except Exception as exc:
                self.error = exc
                exchange.cancel()


class _Stale(Exception):
    """The connection failed before any response byte (internal: drives the retry)."""


def request_head(request: Request) -> RequestHead:
    """The HTTP/1.1 head for ``request`` (internal headers stripped, everything validated)."""
    if request.is_connect or request.is_websocket:
        raise BadRequest("CONNECT is a tunnel, not an HTTP request to forward")
    if request.h1_head is not None:  # derived and validated by whoever built the request
        return request.h1_head
    return h2_request_to_h1(strip_request(request).h2_headers())


async def forward_h1(
    pool: UpstreamPool,
    endpoint: Endpoint,
    request: Request,
    body: Body,
    writer: ResponseWriter,
    *,
    connect_timeout: float,
) -> None:
    """Send ``request`` to ``endpoint`` and stream the response into ``writer``."""
    head = request_head(request)
    declared = declared_content_length(head.headers, MalformedHeaders)
    pump = BodyPump(body, ContentLengthCounter(declared))
    # Connect before touching the body: a failed connect must leave the request replayable
    # on another endpoint or site (EndpointConnectFailed promises that nothing was consumed).
    conn, reused = await pool.checkout_h1(endpoint, connect_timeout=connect_timeout)
    first = b""
    ended = False
    try:
        if declared is None or declared == 0:
            first = await pump.pull()
            ended = not first
    except BaseException:
        pool.discard_h1(conn)
        raise
    trailers = body.trailers if ended else ()
    length = declared
    if ended and declared is None and not trailers and head.method not in _NO_BODY_METHODS:
        length = 0
    has_body = not (ended and length is None and not trailers)

    async def attempt(conn: H1ClientConnection) -> None:
        await _exchange(
            pool, endpoint, conn, request, head, pump, writer,
            length=length, has_body=has_body, first=first, ended=ended, trailers=trailers,
        )  # fmt: skip

    try:
        await attempt(conn)
    except _Stale as stale:
        if not (reused and head.method in IDEMPOTENT_METHODS and pump.pulled == 0):
            raise UpstreamClosed(str(stale), response_started=False) from None
        fresh = await pool.connect_h1(endpoint, connect_timeout=connect_timeout)
        try:
            await attempt(fresh)
        except _Stale as again:
            raise UpstreamClosed(str(again), response_started=False) from None


async def _exchange(
    pool: UpstreamPool,
    endpoint: Endpoint,
    conn: H1ClientConnection,
    request: Request,
    head: RequestHead,
    pump: BodyPump,
    writer: ResponseWriter,
    *,
    length: int | None,
    has_body: bool,
    first: bytes,
    ended: bool,
    trailers: Headers,
) -> None:
    released = False
    response_seen = False
    try:
        try:
            await conn.send_request(
                head,
                content_length=length,
                has_body=has_body,
                body=first,
                end=ended and not trailers,
            )
            if ended and trailers:
                await conn.end_request(h2_trailers_to_h1(trailers, from_upstream=False))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise _Stale(f"connection to {endpoint.address}:{endpoint.port} broke: {exc}") from None
        if ended:  # the common body-less request: no pump, no nursery
            response = await conn.receive_response()
            response_seen = True
            await relay_h1_response(conn, request, response, writer, pump)
        else:
            failure: Exception | None = None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    pump.run, conn.send_body, conn.end_request, nursery.cancel_scope, _WIRE_ERRORS
                )
                try:
                    response = await conn.receive_response()
                    response_seen = True
                    await relay_h1_response(conn, request, response, writer, pump)
                except Exception as exc:
                    failure = exc
                    nursery.cancel_scope.cancel()
            if pump.error is not None:
                raise pump.error
            if failure is not None:
                raise failure
        if pump.done or ended:
            pool.release_h1(endpoint, conn)
            released = True
    except UpstreamClosed as exc:
        if not response_seen and not exc.response_started:
            raise _Stale(str(exc)) from None
        raise
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        if not response_seen:
            raise _Stale(f"connection to {endpoint.address}:{endpoint.port} broke: {exc}") from None
        raise UpstreamClosed(f"endpoint connection broke: {exc}", response_started=True) from None
    finally:
        if not released:
            pool.discard_h1(conn)


async def relay_h1_response(
    conn: H1ClientConnection,
    request: Request,
    response: ResponseHead,
    writer: ResponseWriter,
    pump: BodyPump,
) -> None:
    """Relay the response whose head is ``response`` (body streamed, trailers kept) to
    ``writer``; also a refused WebSocket upgrade's answer."""
    headers = h1_response_to_h2(response)[1:]
    out = Response(response.status, headers, response.reason)
    empty = (
        request.method == b"HEAD"
        or response.status in _BODYLESS_STATUS
        or response.get(b"content-length") == b"0"
    )
    if empty:
        if await conn.receive_body():
            raise UpstreamProtocolError("a response without a body carried one")
        pump.stop(finish_small=True)
        await writer.send_head(out, end_stream=True)
        return
    whole = getattr(writer, "send_whole", None)
    length = declared_content_length(out.headers, UpstreamProtocolError)
    if whole is not None and length is not None and length <= min(conn.buffered, READ_SIZE):
        # The whole body is here already (the usual small response): head and body in one
        # write downstream; reading it takes no I/O, so nothing is delayed.
        parts: list[bytes] = []
        while data := await conn.receive_body():
            parts.append(data)
        pump.stop(finish_small=True)
        await whole(out, b"".join(parts))
        return
    await writer.send_head(out)
    while data := await conn.receive_body():
        await writer.send_data(data)
    pump.stop(finish_small=True)
    await writer.send_end(h1_trailers_to_h2(conn.trailers))
