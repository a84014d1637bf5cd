"""The decision trace of a real request, for callers allowed to ask (``x-isthmus-debug``).

A caller sends ``x-isthmus-debug: trace``.  When ``[debug]`` allows it (its SPIFFE ID or
source address, :class:`~gateway.config.debug.DebugConfig`), the router computes the same
trace ``isthmus explain`` shows -- before forwarding, without sending anything more -- and
returns it on the response head as ``x-isthmus-trace`` (one line:
:meth:`~gateway.router.explain.Trace.summary`).  Anyone else's header is ignored.  The header
never reaches an endpoint (:mod:`gateway.http.caller_headers` removes it with the other
``x-isthmus-*`` fields).  The trace holds no header value, so no credential can appear in it.

Cost: requests without the header pay one scan of their header names, and none at all when
``[debug]`` allows nobody.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import replace

from gateway.config.debug import DebugConfig
from gateway.http.caller_headers import DEBUG_HEADER
from gateway.http.exchange import CallContext, Request, Response, ResponseWriter
from gateway.http.message import Headers
from gateway.router.explain import Trace

TRACE_HEADER = b"x-isthmus-trace"
#: The value that asks for a trace.
WANT_TRACE = b"trace"
#: A trace longer than this is cut (a header the caller's client must accept).
MAX_TRACE_BYTES = 2048

Explainer = Callable[[Request, CallContext], Awaitable[Trace]]


def wants_trace(request: Request, ctx: CallContext, debug: DebugConfig) -> bool:
    """Whether to trace this request: it asks, and ``debug`` allows its caller (pure)."""
    if not debug.allow_ids and not debug.allow_cidrs:
        return False
    if not any(n == DEBUG_HEADER and v.strip() == WANT_TRACE for n, v in request.headers):
        return False
    return debug.allows(ctx.caller_id, ctx.caller_address)


def trace_field(trace: Trace) -> Headers:
    """The response field carrying ``trace`` (visible ASCII, bounded)."""
    text = trace.summary().encode("ascii", "replace")[:MAX_TRACE_BYTES]
    return ((TRACE_HEADER, text),)


class TraceWriter:
    """A response writer that adds the trace field to the head it passes on."""

    __slots__ = ("_fields", "_inner")

    def __init__(self, inner: ResponseWriter, fields: Headers) -> None:
        self._inner = inner
        self._fields = fields

    @property
    def head_sent(self) -> bool:
        return self._inner.head_sent

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None:
        with_trace = replace(response, headers=(*response.headers, *self._fields))
        await self._inner.send_head(with_trace, end_stream=end_stream)

    async def send_data(self, data: bytes) -> None:
        await self._inner.send_data(data)

    async def send_end(self, trailers: Headers = ()) -> None:
        await self._inner.send_end(trailers)
