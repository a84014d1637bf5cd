"""Errors become responses in one place: what an error does to the exchange it ended.

Why one module: an error can end an exchange on three wires -- an HTTP/1.1 caller, an HTTP/2
caller, a peer gateway's tunnel stream -- and each needs the same two-part rule, decided here
by :func:`rescue` (pure) and carried out by a thin adapter per wire:

* **Before the response head** the error *is* the answer: the status and plain-text body of
  :func:`~gateway.http.headers.error_response` (a 404 names the address, a 503 each site
  tried...).  To a peer, an error that shows the site did no work
  (:class:`~gateway.upstream.pool.UpstreamUnavailable`: no endpoint, none accepted a
  connection) is not answered but refused: RST_STREAM ``REFUSED_STREAM`` tells the origin it
  may try the next site at once (RFC 9113 section 8.7), where a 503 would end the request.
* **The caller is gone** (:class:`~gateway.http.caller_side.CallerGone`: it reset its stream,
  closed its connection): nothing is answered, before the head or after; the stream is reset
  (``CANCEL``), an HTTP/1.1 connection closed.
* **After the response head** nothing can be answered any more: HTTP/1.1 closes the
  connection (marked failed: a cut response is never a clean ending), HTTP/2 resets the
  stream.  The reset code is the error's own for a local caller; to a peer only the caller's
  fault keeps its code (``PROTOCOL_ERROR``...), anything else is ``INTERNAL_ERROR``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Literal

import trio

from foundation.errors import H2_INTERNAL_ERROR, H2_REFUSED_STREAM, DownstreamError, IsthmusError
from gateway.http.caller_side import CallerGone
from gateway.http.errors import ResetInstead
from gateway.http.exchange import Response
from gateway.http.h1_server import H1ServerConnection
from gateway.http.h2_adapter import H2ResponseWriter
from gateway.http.headers import error_response, strip_connection_specific
from gateway.http.message import ResponseHead
from gateway.listener.caller_stream import mark_failed
from gateway.upstream.pool import UpstreamUnavailable
from overlay.h2.stream import H2Stream, TunnelError

Wire = Literal["h1", "h2"]


@dataclass(frozen=True, slots=True)
class Answer:
    """No response head went out yet: answer with this error response."""

    head: ResponseHead
    body: bytes


@dataclass(frozen=True, slots=True)
class Reset:
    """Reset the HTTP/2 stream with ``code`` (after the head, or a refusal to a peer)."""

    code: int


@dataclass(frozen=True, slots=True)
class Close:
    """A response head went out on HTTP/1.1: close the connection (marked failed)."""


Rescue = Answer | Reset | Close


def rescue(exc: BaseException, *, head_sent: bool, wire: Wire, to_peer: bool = False) -> Rescue:
    """What ``exc`` does to the exchange it ended (see the module docstring)."""
    if isinstance(exc, CallerGone):  # nobody is left to read an answer
        return Close() if wire == "h1" else Reset(exc.h2_error_code)
    if head_sent:
        if wire == "h1":
            return Close()
        mapped = DownstreamError if to_peer else IsthmusError
        return Reset(exc.h2_error_code if isinstance(exc, mapped) else H2_INTERNAL_ERROR)
    if isinstance(exc, ResetInstead):
        return Close() if wire == "h1" else Reset(exc.h2_error_code)
    if to_peer and isinstance(exc, UpstreamUnavailable):
        return Reset(H2_REFUSED_STREAM)
    head, body = error_response(exc)
    return Answer(head, body)


async def rescue_h1(
    conn: H1ServerConnection, stream: trio.abc.Stream, exc: BaseException, *, head_sent: bool
) -> None:
    """End an HTTP/1.1 exchange after ``exc``: the error response, or a close (the
    connection's ``send_error`` does both, lingering so the caller can read the answer)."""
    if isinstance(rescue(exc, head_sent=head_sent, wire="h1"), Close):
        mark_failed(stream)  # a response cut short: never a clean ending
        if not head_sent:  # ResetInstead: close without an answer
            await conn.aclose()
            return
    await conn.send_error(exc)


async def rescue_h2(stream: H2Stream, writer: H2ResponseWriter, exc: BaseException) -> None:
    """End a local caller's HTTP/2 stream after ``exc``: the error response, or a reset."""
    action = rescue(exc, head_sent=writer.head_sent, wire="h2")
    if isinstance(action, Reset):
        stream.reset(action.code)
        return
    assert isinstance(action, Answer)
    head, body = action.head, action.body
    headers = ((b":status", b"%d" % head.status), *strip_connection_specific(head.headers))
    await stream.send_headers(headers)
    await stream.send_all(body)
    await stream.send_eof()


async def rescue_peer_stream(
    stream: H2Stream, writer: H2ResponseWriter, exc: BaseException, *, head_only: bool
) -> Rescue:
    """End a peer's tunnel stream after ``exc``: the error response (no body for ``HEAD``),
    a refusal or a reset.  A stream the peer already gave up on is left alone (nothing here
    may take the link down).  Returns what was done, for the caller's log."""
    action = rescue(exc, head_sent=writer.head_sent, wire="h2", to_peer=True)
    if isinstance(action, Reset):
        stream.reset(action.code)
        return action
    assert isinstance(action, Answer)
    head, body = action.head, action.body
    headers = strip_connection_specific(head.headers)
    if head_only:
        body = b""
        headers = tuple((n, v) for n, v in headers if n != b"content-length")
    with contextlib.suppress(TunnelError, trio.BrokenResourceError, trio.ClosedResourceError):
        await writer.send_head(Response(head.status, headers), end_stream=not body)
        if body:
            await writer.send_data(body)
            await writer.send_end()
    return action
