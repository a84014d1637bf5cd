""":class:`~gateway.http.exchange.Body` and ``ResponseWriter`` over a downstream HTTP/1.1
connection (:class:`~gateway.http.h1_server.H1ServerConnection`).

Why: the router and every upstream speak the internal HTTP/2-semantics exchange; this adapter
is the HTTP/1.1 caller's end of it.  The request body is read piece by piece as the caller
sends it (chunked or Content-Length, never buffered whole); the response is written as the
upstream produces it: with ``Content-Length`` when the upstream declared one, else chunked
(HTTP/1.1) or close-delimited (HTTP/1.0), and trailers go out as chunked trailers when the
caller can take them.
"""

from __future__ import annotations

from gateway.http.errors import UpstreamProtocolError
from gateway.http.exchange import Response, standard_reason
from gateway.http.h1_server import H1ServerConnection
from gateway.http.message import Headers, ResponseHead
from gateway.http.transcode import declared_content_length, h1_trailers_to_h2


class H1Body:
    """The request body of the current exchange on ``conn``."""

    __slots__ = ("conn",)

    def __init__(self, conn: H1ServerConnection) -> None:
        self.conn = conn

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        # Pieces are bounded by the connection's read size (max_bytes is advisory here).
        return await self.conn.receive_body()

    @property
    def trailers(self) -> Headers:
        return h1_trailers_to_h2(self.conn.trailers)


def _reason(response: Response) -> bytes:
    """The endpoint's own reason phrase if it sent one, else the standard one."""
    return response.reason or standard_reason(response.status)


class H1ResponseWriter:
    """Writes the response of the current exchange on ``conn``."""

    __slots__ = ("_head_sent", "conn")

    def __init__(self, conn: H1ServerConnection) -> None:
        self.conn = conn
        self._head_sent = False

    @property
    def head_sent(self) -> bool:
        return self._head_sent

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None:
        self._head_sent = True
        length = declared_content_length(response.headers, UpstreamProtocolError)
        if end_stream and length is None and response.status not in (204, 304):
            length = 0  # a complete empty body: say so rather than chunk nothing
        head = ResponseHead(response.status, response.headers, _reason(response))
        await self.conn.send_response(head, content_length=length, end=end_stream)

    async def send_data(self, data: bytes) -> None:
        await self.conn.send_body(data)

    async def send_end(self, trailers: Headers = ()) -> None:
        await self.conn.end_response(trailers)

    async def send_whole(self, response: Response, body: bytes, trailers: Headers = ()) -> None:
        """A response that is complete already (head, whole body, trailers): one write.

        An optional fast path a forwarder may use (``getattr(writer, "send_whole")``) when
        it knows the whole response without waiting; the result on the wire is what
        ``send_head``/``send_data``/``send_end`` would have produced.
        """
        if trailers:  # trailers need chunked framing: take the general path
            await self.send_head(response)
            await self.send_data(body)
            await self.send_end(trailers)
            return
        self._head_sent = True
        length = declared_content_length(response.headers, UpstreamProtocolError)
        if length is None and body:
            length = len(body)
        head = ResponseHead(response.status, response.headers, _reason(response))
        await self.conn.send_response(head, content_length=length, body=body, end=True)
