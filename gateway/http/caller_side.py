"""The caller's side of an exchange, told apart from the endpoint's: :class:`CallerGone`.

Why: a forwarder reads the request body from the caller and writes the response to it while
it talks to an endpoint (or a peer gateway), and both sides fail with the same types -- a
``StreamReset`` is raised by the caller's HTTP/2 stream and by a link tunnel alike, a
``BrokenResourceError`` by a caller's socket and an endpoint's.  Abuse budgets and failure
accounting belong to whoever caused the failure: a caller that resets its stream (or whose
gateway forwards that reset over the link), closes its connection or stops reading ends the
exchange, but the endpoint did nothing wrong.  Charged to the endpoint, a reset flood from
one caller would make outlier detection eject a healthy endpoint (and its site then export
no capacity), and the retry layer would spend its budget retrying for nobody.

So the cluster wraps the caller's body and writer once, where the exchange starts
(:class:`CallerBody`, :class:`CallerWriter`): a transport failure raised *by the caller's
side* becomes :class:`CallerGone`, a :class:`~foundation.errors.DownstreamError`.  It is no
``UpstreamError``, so the forwarders' upstream handling, outlier detection, the retry
budget and the breakers' outcome let it pass untouched, and :mod:`gateway.http.rescue` maps
it like any caller fault (a reset with ``CANCEL`` when a head went out).
"""

from __future__ import annotations

import trio

from foundation.errors import H2_CANCEL, DownstreamError
from gateway.http.exchange import Body, EmptyBody, Response, ResponseWriter, send_whole_through
from gateway.http.held_body import held_whole
from gateway.http.message import Headers
from overlay.h2.stream import TunnelError

__all__ = ["CallerBody", "CallerGone", "CallerWriter", "caller_body"]

#: What a caller's body or writer raises when the caller (or the link it came over) is gone:
#: its stream reset, its connection closed or broken.
CALLER_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    TunnelError,
)


class CallerGone(DownstreamError):
    """The caller's side of the exchange failed (reset, closed, broken): nobody is left to
    answer, and no endpoint or peer is to blame."""

    http_status = 499  # nginx's "client closed request": never sent, the caller is gone
    h2_error_code = H2_CANCEL


class CallerBody:
    """The caller's request :class:`Body`, its transport failures raised as :class:`CallerGone`."""

    __slots__ = ("inner",)

    def __init__(self, inner: Body) -> None:
        self.inner = inner

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self.inner.receive_some(max_bytes)
        except CALLER_TRANSPORT_ERRORS as exc:
            raise CallerGone(f"the caller's request body failed: {exc!r}") from exc

    @property
    def trailers(self) -> Headers:
        return self.inner.trailers

    def held_whole(self, limit: int) -> bytes | None:
        return held_whole(self.inner, limit)


def caller_body(body: Body) -> Body:
    """``body`` guarded by :class:`CallerBody` (an :class:`EmptyBody` stays itself: the
    forwarders recognise it to send a body-less request)."""
    return body if isinstance(body, EmptyBody) else CallerBody(body)


class CallerWriter:
    """The caller's :class:`ResponseWriter`, its transport failures raised as
    :class:`CallerGone` (errors the writer raises on purpose, such as a retry holding a head
    back, pass as they are)."""

    __slots__ = ("inner",)

    def __init__(self, inner: ResponseWriter) -> None:
        self.inner = inner

    @property
    def head_sent(self) -> bool:
        return self.inner.head_sent

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None:
        try:
            await self.inner.send_head(response, end_stream=end_stream)
        except CALLER_TRANSPORT_ERRORS as exc:
            raise _gone(exc) from exc

    async def send_data(self, data: bytes) -> None:
        try:
            await self.inner.send_data(data)
        except CALLER_TRANSPORT_ERRORS as exc:
            raise _gone(exc) from exc

    async def send_end(self, trailers: Headers = ()) -> None:
        try:
            await self.inner.send_end(trailers)
        except CALLER_TRANSPORT_ERRORS as exc:
            raise _gone(exc) from exc

    async def send_whole(self, response: Response, body: bytes, trailers: Headers = ()) -> None:
        """Keeps the inner writer's one-write fast path (the forwarders look it up)."""
        try:
            await send_whole_through(self.inner, response, body, trailers)
        except CALLER_TRANSPORT_ERRORS as exc:
            raise _gone(exc) from exc


def _gone(exc: BaseException) -> CallerGone:
    return CallerGone(f"writing the response to the caller failed: {exc!r}")
