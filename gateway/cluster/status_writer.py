"""A pass-through :class:`~gateway.http.exchange.ResponseWriter` that remembers the status.

Why: passive outlier detection needs the endpoint's status code, and the forwarders write it
straight to the caller's writer.  This keeps the forwarders unaware of outlier detection.
"""

from __future__ import annotations

from gateway.cluster.outlier import Outcome
from gateway.http.exchange import Response, ResponseWriter, send_whole_through
from gateway.http.message import Headers


class StatusWriter:
    """Forwards everything to ``inner``; ``status`` is the head's status once it went out."""

    __slots__ = ("inner", "status")

    def __init__(self, inner: ResponseWriter) -> None:
        self.inner = inner
        self.status: int | None = None

    def outcome(self) -> Outcome:
        return "5xx" if self.status is not None and self.status >= 500 else "success"

    @property
    def head_sent(self) -> bool:
        return self.inner.head_sent

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None:
        self.status = response.status
        await self.inner.send_head(response, end_stream=end_stream)

    async def send_data(self, data: bytes) -> None:
        await self.inner.send_data(data)

    async def send_end(self, trailers: Headers = ()) -> None:
        await self.inner.send_end(trailers)

    async def send_whole(self, response: Response, body: bytes, trailers: Headers = ()) -> None:
        """Keeps the inner writer's one-write fast path (the forwarders look it up)."""
        self.status = response.status
        await send_whole_through(self.inner, response, body, trailers)
