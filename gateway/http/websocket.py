"""WebSocket across the overlay: the handshake rules, pure and sans-IO.

Why a module of its own: an ``Upgrade`` request is the one HTTP/1.1 message that must not be
transcoded like the others.  ``Upgrade`` is hop-by-hop, so the ordinary path (drop it, send
the rest on) would silently turn a WebSocket handshake into a plain GET -- or, for ``h2c``,
into a request the caller never meant.  So every ``Upgrade`` is decided here, before routing:

* ``Upgrade: websocket`` (RFC 6455 section 4.1: GET, HTTP/1.1, ``Connection: upgrade``, a
  ``Sec-WebSocket-Key`` of 16 base64 bytes, a ``Sec-WebSocket-Version``) is carried;
* anything else (``h2c``, ``foo``, a list of several protocols) is **501**, never forwarded;
* a WebSocket request that breaks RFC 6455's rules is 400.

Theory of operation (one WebSocket, three hops)
-----------------------------------------------
1. The caller's gateway turns the HTTP/1.1 handshake into an internal :class:`Request` with
   ``method CONNECT`` and ``protocol websocket`` (:func:`websocket_request`): the RFC 8441
   extended CONNECT shape, which is how it crosses a link (``:method CONNECT``, ``:protocol
   websocket``, ``:scheme``, ``:path``, ``:authority`` = the L7 address).  The handshake fields
   (``sec-websocket-key``/``-version``/``-protocol``/``-extensions``, ``origin``, cookies...)
   travel as ordinary fields.  Both link ends are Isthmus gateways, so the caller's own key
   goes along: the endpoint computes the accept value for exactly the key the caller chose.
2. The destination gateway reads the block back (:func:`websocket_request_from_h2`, the same
   strict rules as any request) and asks an HTTP/1.1 endpoint to switch
   (:func:`h1_upgrade_head`, sent with ``Connection: upgrade`` and ``Upgrade: websocket``).
   A ``101`` must name ``websocket`` and carry the right ``Sec-WebSocket-Accept``
   (:func:`check_switch`), else 502: the gateway never relays raw bytes to something that
   did not agree to speak WebSocket.  The 101's end-to-end fields go
   back as the extended CONNECT's ``:status 200`` (with ``sec-websocket-accept``, which only a
   switch carries); any other status goes back as itself, body and all, and the stream ends.
3. The caller's gateway answers ``101 Switching Protocols`` with those fields
   (:func:`encode_switch`), then both gateways relay bytes like an L4 tunnel.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable
from dataclasses import replace

from foundation.errors import DownstreamError
from gateway.http.caller_headers import PEER_ENTRY_STRIPPED
from gateway.http.errors import BadRequest, MalformedHeaders, UpstreamProtocolError
from gateway.http.exchange import Request
from gateway.http.headers import encode_head
from gateway.http.message import Headers, RequestHead, ResponseHead, comma_tokens
from gateway.http.transcode import h2_request_to_h1

WEBSOCKET = b"websocket"
#: Present on a WebSocket answer only when the endpoint switched: a refusal never carries it
#: across a link (:func:`refusal_fields`), so a refusal with status 200 stays a refusal.
ACCEPT_HEADER = b"sec-websocket-accept"
#: RFC 6455 section 1.3: appended to the key before hashing it into the accept value.
_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: Fields that describe a body; a handshake has none, and a 101 must not carry them.
_FRAMING = frozenset({b"content-length", b"transfer-encoding"})


class UpgradeNotSupported(DownstreamError):
    """The caller asked to switch to a protocol this gateway does not carry (501)."""

    http_status = 501


def requested_upgrade(head: RequestHead) -> bytes | None:
    """The protocol an HTTP/1.1 request asks to switch to: ``b"websocket"``, or None when it
    carries no ``Upgrade`` field.

    Raises :class:`UpgradeNotSupported` (501) for any other upgrade and ``BadRequest`` (400)
    for a WebSocket handshake that breaks RFC 6455 section 4.1.
    """
    if head.get(b"upgrade") is None:
        return None
    tokens = comma_tokens(head.headers, b"upgrade")
    if tokens != [WEBSOCKET]:
        shown = b", ".join(tokens)[:100].decode("ascii", "replace")
        raise UpgradeNotSupported(
            f"Upgrade: {shown} is not supported; only 'websocket' is carried by this gateway"
        )
    if head.http_version != b"1.1" or head.method != b"GET":
        raise BadRequest("a WebSocket handshake is a GET over HTTP/1.1")
    if b"upgrade" not in comma_tokens(head.headers, b"connection"):
        raise BadRequest("a WebSocket handshake names 'upgrade' in Connection")
    key = head.get(b"sec-websocket-key")
    if key is None or not _valid_key(key):
        raise BadRequest("Sec-WebSocket-Key must be 16 bytes in base64")
    if head.get(b"sec-websocket-version") is None:
        raise BadRequest("a WebSocket handshake needs Sec-WebSocket-Version")
    if any(n in _FRAMING and v != b"0" for n, v in head.headers):
        raise BadRequest("a WebSocket handshake has no body")
    return WEBSOCKET


def _valid_key(key: bytes) -> bool:
    try:
        return len(base64.b64decode(key, validate=True)) == 16
    except (binascii.Error, ValueError):
        return False


def accept_value(key: bytes) -> bytes:
    """``Sec-WebSocket-Accept`` for ``key`` (RFC 6455 section 4.2.2)."""
    return base64.b64encode(hashlib.sha1(key + _GUID, usedforsecurity=False).digest())


def websocket_request(request: Request) -> Request:
    """The internal (extended CONNECT) request for a caller's WebSocket handshake, built from
    the ordinary transcoding of its GET (hop-by-hop fields already dropped)."""
    fields = tuple((n, v) for n, v in request.headers if n not in _FRAMING)
    return replace(request, method=b"CONNECT", protocol=WEBSOCKET, headers=fields, h1_head=None)


def websocket_request_from_h2(block: Iterable[tuple[bytes, bytes]]) -> Request:
    """A validated internal WebSocket request from a peer's extended CONNECT block.

    The block must be ``:method CONNECT`` with ``:protocol websocket`` (another protocol is
    501), ``:scheme``, ``:path`` and ``:authority``; every other rule is the one every request
    from a peer passes (:func:`~gateway.http.transcode.h2_request_to_h1`, checked as the GET
    it stands for), and ``sec-websocket-key`` must be a valid key.  ``h1_head`` is the
    validated GET (without the upgrade fields, which :func:`h1_upgrade_head` adds).
    """
    pairs = [(n, v) for n, v in block if n not in PEER_ENTRY_STRIPPED]
    protocols = [v for n, v in pairs if n == b":protocol"]
    if len(protocols) != 1:
        raise MalformedHeaders("extended CONNECT carries exactly one :protocol")
    if protocols[0] != WEBSOCKET:
        raise UpgradeNotSupported(f":protocol {protocols[0][:64]!r} is not supported")
    methods = [v for n, v in pairs if n == b":method"]
    if methods != [b"CONNECT"]:
        raise MalformedHeaders(":protocol is only allowed on CONNECT (RFC 8441 section 4)")
    as_get = [(n, b"GET") if n == b":method" else (n, v) for n, v in pairs if n != b":protocol"]
    head = h2_request_to_h1(as_get)  # raises MalformedHeaders
    key = head.get(b"sec-websocket-key")
    if key is None or not _valid_key(key):
        raise MalformedHeaders("sec-websocket-key must be 16 bytes in base64")
    if head.get(b"sec-websocket-version") is None:
        raise MalformedHeaders("a WebSocket request needs sec-websocket-version")
    pseudo = {n: v for n, v in pairs if n.startswith(b":")}
    regular = tuple((n, v) for n, v in pairs if not n.startswith(b":"))
    return Request(
        method=b"CONNECT",
        scheme=pseudo[b":scheme"],
        authority=head.headers[0][1],  # h2_request_to_h1 puts the checked authority first
        path=pseudo[b":path"],
        headers=regular,
        protocol=WEBSOCKET,
        h1_head=head,
    )


def h1_upgrade_head(request: Request) -> RequestHead:
    """The HTTP/1.1 handshake that asks an endpoint to switch to WebSocket, without its
    hop-by-hop ``Connection``/``Upgrade`` fields (the connection that sends it adds them)."""
    head = request.h1_head
    if head is None:
        as_get = replace(request, method=b"GET", protocol=None).h2_headers()
        head = h2_request_to_h1(as_get)
    fields = [(n, v) for n, v in head.headers if n not in _FRAMING]
    return RequestHead(
        method=b"GET", target=head.target, http_version=b"1.1", headers=tuple(fields)
    )


def check_switch(response: ResponseHead, key: bytes) -> None:
    """Raise ``UpstreamProtocolError`` (502) unless a 101 really switched to WebSocket for
    ``key``: ``Upgrade: websocket``, ``Connection: upgrade`` and the right accept value."""
    if comma_tokens(response.headers, b"upgrade") != [WEBSOCKET]:
        raise UpstreamProtocolError("the endpoint switched to a protocol other than websocket")
    if b"upgrade" not in comma_tokens(response.headers, b"connection"):
        raise UpstreamProtocolError("the endpoint's 101 does not name 'upgrade' in Connection")
    if response.get(b"sec-websocket-accept") != accept_value(key):
        raise UpstreamProtocolError("the endpoint's Sec-WebSocket-Accept does not match the key")


def refusal_fields(headers: Headers) -> Headers:
    """The fields of an endpoint's non-101 answer as they travel on: no accept value (it
    means "switched" on a link, and nothing in a refusal)."""
    return tuple((n, v) for n, v in headers if n != ACCEPT_HEADER)


def switch_fields(headers: Headers) -> Headers:
    """The end-to-end fields of a 101 that travel on (no body framing: a 101 has no body)."""
    return tuple((n, v) for n, v in headers if n not in _FRAMING)


def encode_switch(fields: Headers) -> bytes:
    """``101 Switching Protocols`` to the caller, with the endpoint's end-to-end fields."""
    out = [(b"Upgrade", WEBSOCKET), (b"Connection", b"Upgrade"), *switch_fields(fields)]
    return encode_head(b"HTTP/1.1 101 Switching Protocols", out)
