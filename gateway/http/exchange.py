"""The one shape of an HTTP exchange inside the gateway, whatever the wire on either side.

Why: a request can enter as HTTP/1.1, h2c or HTTP/2 over TLS, or as a tunnel stream from a
peer gateway, and leave to an HTTP/1.1 endpoint, an HTTP/2 endpoint or a peer gateway.  Every
entry adapter turns its wire into (:class:`Request`, :class:`Body`) and gives the forwarder a
:class:`ResponseWriter`; every forwarder (an :data:`Upstream`) consumes those and never knows
which wire the caller used.  That keeps N entries x M exits at N + M adapters (linkerd's
layering).  Internally a request has HTTP/2 semantics -- pseudo-header values plus regular
fields with lowercase names and no connection-specific fields -- because the overlay speaks
HTTP/2 and HTTP/1.1 is transcoded at the edges (see :mod:`gateway.http.transcode`).

Streaming is the rule: :class:`Body` hands out bounded pieces as the caller sends them and
:class:`ResponseWriter` pushes pieces as the upstream produces them; nothing buffers a body
whole.  Back-pressure flows through ``await``: a writer that cannot send blocks its reader.

Identity and deadline travel with the request in :class:`CallContext`, never as trusted
headers: the ``isthmus-*`` headers exist only on links between gateways and are stripped from
anyone else (:mod:`gateway.http.overlay_headers`).
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Protocol

import trio

from foundation.spiffe_id import SpiffeId
from gateway.http.message import Headers, RequestHead

#: The most bytes asked of a body or a stream per read where nothing else bounds it: one
#: piece per direction is in flight, so memory stays flat whatever the volume.
READ_SIZE = 64 * 1024


@dataclass(frozen=True, slots=True)
class Request:
    """A request head with HTTP/2 semantics.

    ``authority`` is the L7 address (with an optional ``:port``) exactly as the caller sent
    it; ``path`` is origin-form (empty for CONNECT); ``headers`` are regular fields only.
    """

    method: bytes
    scheme: bytes
    authority: bytes
    path: bytes
    headers: Headers
    #: RFC 8441 ``:protocol`` of an extended CONNECT (``b"websocket"``): the request asks to
    #: switch protocols rather than open a plain L4 tunnel.  None for every other request.
    protocol: bytes | None = None
    #: The HTTP/1.1 head for exactly this request, when whoever built it had already derived
    #: and validated one (the destination gateway does, from the peer's block): an HTTP/1.1
    #: endpoint then reuses it instead of validating the same fields a second time.
    h1_head: RequestHead | None = field(default=None, compare=False, repr=False)

    @property
    def is_connect(self) -> bool:
        """A plain CONNECT (an L4 tunnel); an extended CONNECT is :attr:`is_websocket`."""
        return self.method == b"CONNECT" and self.protocol is None

    @property
    def is_websocket(self) -> bool:
        return self.protocol is not None

    def h2_headers(self) -> Headers:
        """Pseudo-headers first, then the regular fields (CONNECT: no :scheme/:path; an
        extended CONNECT has all four and ``:protocol``, RFC 8441 section 4)."""
        pseudo: Headers
        if self.protocol is not None:
            pseudo = (
                (b":method", self.method),
                (b":protocol", self.protocol),
                (b":scheme", self.scheme),
                (b":authority", self.authority),
                (b":path", self.path),
            )
        elif self.is_connect:
            pseudo = ((b":method", self.method), (b":authority", self.authority))
        else:
            pseudo = (
                (b":method", self.method),
                (b":scheme", self.scheme),
                (b":authority", self.authority),
                (b":path", self.path),
            )
        return pseudo + self.headers


@dataclass(frozen=True, slots=True)
class Response:
    """A final response head (1xx are handled by the wire adapters).

    ``reason``: the reason phrase an HTTP/1.1 endpoint sent (``HTTP/1.1 299 Custom Reason``),
    kept so an HTTP/1.1 caller gets the status line the endpoint wrote; empty when the
    response came from HTTP/2 or the gateway itself, and the HTTP/1.1 writer then uses the
    standard phrase for the status.  HTTP/2 has no reason phrase, so across a link it travels
    in the internal ``isthmus-reason`` header, and only when it is not the standard phrase
    (see :func:`gateway.http.overlay_headers.encode_reason`).
    """

    status: int
    headers: Headers
    reason: bytes = b""


_STANDARD_REASONS = {s.value: s.phrase.encode("ascii") for s in HTTPStatus}


def standard_reason(status: int) -> bytes:
    """The phrase RFC 9110 gives ``status`` (b"" for a code it does not name)."""
    return _STANDARD_REASONS.get(status, b"")


@dataclass(frozen=True, slots=True)
class CallContext:
    """Who is calling and until when, as established by the gateway (never by a header
    a caller could set).

    ``caller_id`` is the SPIFFE ID the original caller authenticated with (mTLS to its local
    gateway), or None for a plain-text local caller.  ``caller_site`` is the site where the
    request entered the overlay.  ``deadline`` (``trio.current_time()`` units) bounds the
    time to the response *head*; once it went out, ``idle_timeout`` bounds the time with no
    byte moving either way (None: no bound) and ``max_deadline`` the whole exchange (see
    :mod:`gateway.http.exchange_timer`).  ``from_peer`` is the site of the peer gateway
    that handed us the request (None when the caller is local).  ``caller_address`` is the
    address a local caller connected from (None for a request from a peer): with
    ``caller_id`` it says who holds a share of a peer's link slots
    (:mod:`gateway.cluster.fair_share`).
    """

    caller_site: str
    caller_id: SpiffeId | None
    deadline: float
    from_peer: str | None = None
    idle_timeout: float | None = None
    max_deadline: float = math.inf
    #: Joins the access lines of every gateway the request crosses (see
    #: :mod:`gateway.observe.request_id`); "" when nothing observes the exchange.
    request_id: str = ""
    caller_address: str | None = None


class Body(Protocol):
    """A request or response body as it arrives: bounded pieces, ``b""`` at the end."""

    async def receive_some(self, max_bytes: int | None = None) -> bytes: ...

    @property
    def trailers(self) -> Headers:
        """Trailers that came with the body (valid once ``receive_some`` returned ``b""``)."""
        ...


class ResponseWriter(Protocol):
    """Where a forwarder sends the response, piece by piece."""

    @property
    def head_sent(self) -> bool:
        """True once :meth:`send_head` was called: from then on a failure can only reset."""
        ...

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None: ...

    async def send_data(self, data: bytes) -> None: ...

    async def send_end(self, trailers: Headers = ()) -> None: ...


async def send_whole_through(
    writer: ResponseWriter, response: Response, body: bytes, trailers: Headers = ()
) -> None:
    """A whole response through ``writer``: its one-write ``send_whole`` fast path when it has
    one, else head, data and end.  Every writer wrapper's ``send_whole`` ends here, so a
    wrapper keeps the fast path of the writer it wraps (the forwarders look it up with
    ``getattr``; losing it cost every small response ~40 us)."""
    whole = getattr(writer, "send_whole", None)
    if whole is not None:
        await whole(response, body, trailers)
        return
    await writer.send_head(response)
    if body:
        await writer.send_data(body)
    await writer.send_end(trailers)


class EmptyBody:
    """The body of a request without one."""

    trailers: Headers = ()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return b""


#: A forwarder: takes the request, its body, where to write the response, and the context.
#: Raises a typed error (``UpstreamError`` subclasses) *before* ``send_head`` if the request
#: may be retried elsewhere; after ``send_head`` it can only fail the response.
Upstream = Callable[[Request, Body, ResponseWriter, CallContext], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class UpgradeResult:
    """What asking for a WebSocket got: the answer, and the stream behind it.

    ``response`` is ``101`` (with the fields for the caller: ``Sec-WebSocket-Accept``...) when
    the endpoint switched; ``stream`` is then the tunnel to relay bytes on.  Any other status
    is a refusal that the caller gets as it is: ``relay_refusal(writer)`` writes its head and
    body.  Either way the owner closes ``stream`` when done.
    """

    response: Response
    stream: trio.abc.HalfCloseableStream
    relay_refusal: Callable[[ResponseWriter], Awaitable[None]]

    @property
    def switched(self) -> bool:
        return self.response.status == 101


async def no_refusal(writer: ResponseWriter) -> None:
    """``UpgradeResult.relay_refusal`` of a switched upgrade: there is nothing to relay."""
    raise RuntimeError("a switched upgrade has no refusal to relay")
