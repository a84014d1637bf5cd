"""HTTP/1.1 messages we send, sans-IO: head serialisation and body framing that cannot lie.

Why apart from ``h1_body.py`` (which decodes what we receive): sending has its own rule, that
the bytes on the wire must match the framing the head declared, whatever the caller asks.

Theory of operation
-------------------
An *encoder* (``LengthEncoder``, ``CHUNKED``, ``CLOSE_DELIMITED``, ``NO_BODY``) turns data pieces
and the end of a message into wire bytes and refuses what contradicts the declared framing
(``LocalFramingError``): more than the Content-Length, an end before it, data on a message that
has no body.  ``encode_response_head`` / ``encode_request_head`` add the framing fields and
serialise in one join, and return the encoder the body must go through.
"""

from __future__ import annotations

from gateway.http.headers import encode_head
from gateway.http.message import Headers, RequestHead, ResponseHead

_BODYLESS_STATUS = frozenset({204, 304})


class LocalFramingError(RuntimeError):
    """We were asked to send what the framing we declared cannot carry (a bug of ours,
    never the peer's): the message on the wire is broken, so the connection must close."""


# ---------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------


class BodyEncoder:
    """Base and no-body encoder (``NO_BODY``): any data is refused; the end adds nothing."""

    __slots__ = ()
    chunked = False

    def data(self, data: bytes) -> bytes:
        """Wire bytes for one non-empty piece of body data."""
        raise LocalFramingError("body data on a message that has no body")

    def end(self, trailers: Headers = ()) -> bytes:
        """Wire bytes that end the body; trailers are sent only by the chunked encoder."""
        return b""


class LengthEncoder(BodyEncoder):
    """Content-Length framing: the data as is, never more than declared, nor less."""

    __slots__ = ("remaining",)

    def __init__(self, length: int) -> None:
        self.remaining = length

    def data(self, data: bytes) -> bytes:
        self.remaining -= len(data)
        if self.remaining < 0:
            raise LocalFramingError("more body data than the declared Content-Length")
        return data

    def end(self, trailers: Headers = ()) -> bytes:
        if self.remaining:
            raise LocalFramingError(f"body ended {self.remaining} bytes short of Content-Length")
        return b""


class _ChunkedEncoder(BodyEncoder):
    __slots__ = ()
    chunked = True

    def data(self, data: bytes) -> bytes:
        # An empty chunk would be the last-chunk: an empty piece is nothing on the wire.
        return b"%x\r\n%s\r\n" % (len(data), data) if data else b""

    def end(self, trailers: Headers = ()) -> bytes:
        return encode_head(b"0", trailers) if trailers else b"0\r\n\r\n"


class _CloseDelimitedEncoder(BodyEncoder):
    __slots__ = ()

    def data(self, data: bytes) -> bytes:
        return data


NO_BODY = BodyEncoder()
CHUNKED = _ChunkedEncoder()
CLOSE_DELIMITED = _CloseDelimitedEncoder()

_CHUNKED_FIELD = (b"transfer-encoding", b"chunked")
_CLOSE_FIELD = (b"connection", b"close")


def encode_response_head(
    head: ResponseHead,
    fields: list[tuple[bytes, bytes]],
    *,
    request_method: bytes,
    request_version: bytes,
    keep_alive: bool,
    content_length: int | None,
) -> tuple[bytes, BodyEncoder, bool]:
    """Serialise a response to a request; returns (head bytes, encoder, keep-alive after).

    ``fields`` are the headers to send, already free of hop-by-hop and framing fields (the
    list is extended in place).  ``content_length`` None means unknown: chunked to HTTP/1.1,
    close-delimited to HTTP/1.0.  HEAD, 204, 304 and a CONNECT 2xx never carry a body (a
    HEAD response still announces the framing a GET would have had).
    """
    status = head.status
    if not 200 <= status <= 999:
        raise ValueError(f"cannot send status {status} as a final response")
    encoder: BodyEncoder
    bodyless = (
        request_method == b"HEAD"
        or status in _BODYLESS_STATUS
        or (request_method == b"CONNECT" and status < 300)
    )
    if content_length is not None:
        fields.append((b"content-length", b"%d" % content_length))
        encoder = NO_BODY if bodyless else LengthEncoder(content_length)
    elif bodyless:
        if request_version == b"1.1" and request_method == b"HEAD":
            fields.append(_CHUNKED_FIELD)
        encoder = NO_BODY
    elif request_version == b"1.1":
        fields.append(_CHUNKED_FIELD)
        encoder = CHUNKED
    else:
        encoder = CLOSE_DELIMITED
        keep_alive = False
    if not keep_alive:
        fields.append(_CLOSE_FIELD)
    start = b"HTTP/1.1 %d %s" % (status, head.reason)
    return encode_head(start, fields), encoder, keep_alive


def encode_request_head(
    head: RequestHead,
    fields: list[tuple[bytes, bytes]],
    *,
    content_length: int | None,
    has_body: bool,
    trailing: Headers = (),
) -> tuple[bytes, BodyEncoder]:
    """Serialise a request (always HTTP/1.1, Host first); returns (head bytes, encoder).

    ``fields`` as for ``encode_response_head``; ``trailing`` fields go after the framing.
    ``content_length`` given: Content-Length framing; else chunked if ``has_body``, else no
    body at all.
    """
    if b" " in head.target or not head.target:
        raise ValueError("request target must be non-empty without spaces")
    encoder: BodyEncoder
    if content_length is not None:
        fields.append((b"content-length", b"%d" % content_length))
        encoder = LengthEncoder(content_length) if content_length else NO_BODY
    elif has_body:
        fields.append(_CHUNKED_FIELD)
        encoder = CHUNKED
    else:
        encoder = NO_BODY
    fields += trailing
    if fields and fields[0][0] != b"host":
        hosts = [f for f in fields if f[0] == b"host"]
        fields = hosts + [f for f in fields if f[0] != b"host"]
    return encode_head(b"%s %s HTTP/1.1" % (head.method, head.target), fields), encoder
