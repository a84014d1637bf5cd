""":class:`~gateway.http.exchange.Body` and ``ResponseWriter`` over an HTTP/2 stream.

Used wherever a request arrives on an HTTP/2 stream (a tunnel from a peer gateway, an h2c or
TLS+h2 caller) and wherever a response arrives on one (a tunnel to a peer, an HTTP/2
endpoint).  Header validation is not done here: the caller converts and checks the header
block with :mod:`gateway.http.transcode` before it builds a :class:`Request`.
"""

from __future__ import annotations

from gateway.http.exchange import Response
from gateway.http.message import Headers
from gateway.http.overlay_headers import encode_reason
from overlay.h2.stream import H2Stream


class H2StreamBody:
    """The body of ``stream`` as it arrives (request body on a server-side stream, response
    body on a client-side one); trailers are available after the end."""

    def __init__(self, stream: H2Stream) -> None:
        self.stream = stream

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.stream.receive_some(max_bytes)

    @property
    def trailers(self) -> Headers:
        return tuple(self.stream.trailers or ())


class H2ResponseWriter:
    """Writes a response on a server-side HTTP/2 stream.

    ``to_peer``: the stream is a tunnel from a peer gateway, which gets a non-standard reason
    phrase in ``isthmus-reason`` (HTTP/2 has none); a caller never gets internal fields.
    """

    def __init__(self, stream: H2Stream, *, to_peer: bool = False) -> None:
        self.stream = stream
        self._head_sent = False
        self._to_peer = to_peer

    def _block(self, response: Response) -> Headers:
        block = ((b":status", str(response.status).encode()), *response.headers)
        if self._to_peer and response.reason:
            block += encode_reason(response)
        return block

    @property
    def head_sent(self) -> bool:
        return self._head_sent

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None:
        self._head_sent = True
        headers = self._block(response)
        await self.stream.send_headers(headers, end_stream=end_stream)

    async def send_data(self, data: bytes) -> None:
        if data:
            await self.stream.send_all(data)

    async def send_whole(self, response: Response, body: bytes, trailers: Headers = ()) -> None:
        """A response that is complete already: HEADERS and DATA+END_STREAM in one write on
        the connection (the optional fast path of ``H1ResponseWriter.send_whole``)."""
        if trailers:
            await self.send_head(response)
            await self.send_data(body)
            await self.send_end(trailers)
            return
        self._head_sent = True
        headers = self._block(response)
        await self.stream.send_response(headers, body)

    async def send_end(self, trailers: Headers = ()) -> None:
        if trailers:
            await self.stream.send_trailers(trailers)
        else:
            await self.stream.send_eof()
