"""How long an HTTP exchange may take: the route timeout to the head, then idle and maximum.

Why not one deadline: a route timeout that bounds the whole exchange cuts healthy streamed
responses mid-body -- a long download, server-sent events, a slow but steady reader -- and
lets a silent one hang until then.  So, as Envoy separates ``timeout`` from
``stream_idle_timeout`` and ``max_stream_duration``:

* **until the response head** is sent to the caller, ``ctx.deadline`` applies (the listener
  sets it to ``now + route_timeout_s``; a peer gateway's ``isthmus-deadline-ms`` carries
  what is left of it, so it bounds the head there too).  Passing it is a 504.
* **once the head went out**, the exchange lives while bytes move: no byte either way (a
  request body piece taken from the caller, a response piece delivered to it) for
  ``ctx.idle_timeout`` ends it; a response can only be cut then (reset, or the HTTP/1.1
  connection closed).
* **at most** ``ctx.max_deadline`` (``now + max_stream_duration_s`` at the listener; none
  by default) for the whole exchange, head and body.

Theory of operation
-------------------
:func:`exchange_deadline` is the pure rule: from the context and two instants (when the head
went out, when a byte last moved) it gives the one time at which the exchange must end.
:class:`ExchangeTimer` is the Trio adapter: it owns one cancel scope around the forwarder
and wraps the response writer and the request body so that the head and every piece that
moves re-apply the rule to the scope's deadline.  When the scope fires, :meth:`expired`
names what passed.
"""

from __future__ import annotations

import math
from dataclasses import replace

import trio

from foundation.errors import UpstreamError
from gateway.http.exchange import (
    Body,
    CallContext,
    EmptyBody,
    Response,
    ResponseWriter,
    send_whole_through,
)
from gateway.http.message import Headers

__all__ = [
    "ExchangeTimer",
    "StreamTimeout",
    "exchange_deadline",
    "with_stream_limits",
]


class StreamTimeout(UpstreamError):
    """A streaming response stopped moving (idle) or outlived its maximum duration.

    Raised after the head went out, so it only cuts the response; the status is what a
    caller would see had the head not been sent yet.
    """

    http_status = 504


def exchange_deadline(ctx: CallContext, *, head_at: float | None, last_activity: float) -> float:
    """When the exchange must end (``trio.current_time()`` units); see the module docstring.

    ``head_at``: when the response head was sent (None: not yet); ``last_activity``: when
    a byte last moved either way (only read once the head is out).
    """
    if head_at is None:
        return min(ctx.deadline, ctx.max_deadline)
    idle = math.inf if ctx.idle_timeout is None else last_activity + ctx.idle_timeout
    return min(idle, ctx.max_deadline)


def with_stream_limits(
    ctx: CallContext, *, now: float, idle_timeout: float | None, max_duration: float | None
) -> CallContext:
    """``ctx`` with this gateway's stream limits, counted from ``now``."""
    max_deadline = math.inf if max_duration is None else now + max_duration
    return replace(ctx, idle_timeout=idle_timeout, max_deadline=max_deadline)


class ExchangeTimer:
    """One exchange's cancel scope, moved by the head and by every piece that moves."""

    __slots__ = ("ctx", "head_at", "scope")

    def __init__(self, ctx: CallContext) -> None:
        self.ctx = ctx
        self.head_at: float | None = None
        self.scope = trio.CancelScope(
            deadline=exchange_deadline(ctx, head_at=None, last_activity=0.0)
        )

    def head(self) -> None:
        """The response head is going out: from now on idle and maximum apply."""
        if self.head_at is None:
            self.head_at = now = trio.current_time()
            self.scope.deadline = exchange_deadline(self.ctx, head_at=now, last_activity=now)

    def moved(self) -> None:
        """A byte moved (after the head: the idle clock restarts)."""
        if self.head_at is not None:
            self.scope.deadline = exchange_deadline(
                self.ctx, head_at=self.head_at, last_activity=trio.current_time()
            )

    def expired(self, what: str) -> StreamTimeout | None:
        """After the scope fired: the error for a cut stream, or None when the head had not
        gone out (the caller raises its own 504 for a route timeout)."""
        if self.head_at is None:
            return None
        now = trio.current_time()
        if now >= self.ctx.max_deadline:
            return StreamTimeout(f"{what}: the exchange reached its maximum duration")
        return StreamTimeout(f"{what}: no data moved for {self.ctx.idle_timeout} s")

    def writer(self, inner: ResponseWriter) -> TimedWriter:
        return TimedWriter(inner, self)

    def body(self, inner: Body) -> Body:
        # An EmptyBody stays one: forwarders test for it to send a body-less request.
        return inner if isinstance(inner, EmptyBody) else TimedBody(inner, self)


class TimedWriter:
    """A :class:`ResponseWriter` that tells its :class:`ExchangeTimer` what went out."""

    __slots__ = ("inner", "timer")

    def __init__(self, inner: ResponseWriter, timer: ExchangeTimer) -> None:
        self.inner = inner
        self.timer = timer

    @property
    def head_sent(self) -> bool:
        return self.inner.head_sent

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None:
        self.timer.head()
        await self.inner.send_head(response, end_stream=end_stream)

    async def send_data(self, data: bytes) -> None:
        await self.inner.send_data(data)
        self.timer.moved()

    async def send_end(self, trailers: Headers = ()) -> None:
        await self.inner.send_end(trailers)

    async def send_whole(self, response: Response, body: bytes, trailers: Headers = ()) -> None:
        """The inner writer's one-write fast path when it has one (``getattr`` by the
        forwarders), else the same response through the general path."""
        self.timer.head()
        await send_whole_through(self.inner, response, body, trailers)


class TimedBody:
    """A request :class:`Body` that tells its :class:`ExchangeTimer` when a piece arrived."""

    __slots__ = ("inner", "timer")

    def __init__(self, inner: Body, timer: ExchangeTimer) -> None:
        self.inner = inner
        self.timer = timer

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self.inner.receive_some(max_bytes)
        self.timer.moved()
        return data

    @property
    def trailers(self) -> Headers:
        return self.inner.trailers
