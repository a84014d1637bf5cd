"""Typed errors of the HTTP codecs (RFC 9110, RFC 9112, RFC 9113), by who is at fault.

Why a module of their own: the HTTP/1.1 parser (``headers.py``), the body codecs
(``h1_body.py``), the transcoder (``transcode.py``), the connections and the listeners all raise
or catch these, and none of them should have to import another's parser to do so.  Each class
carries the HTTP status (and, where it differs from the default, the HTTP/2 error code) it maps
to, so the one place that answers an error (``headers.error_response``) needs no table of its
own.
"""

from __future__ import annotations

import math

from foundation.errors import (
    H2_INTERNAL_ERROR,
    H2_PROTOCOL_ERROR,
    H2_REFUSED_STREAM,
    DownstreamError,
    IsthmusError,
    UpstreamError,
)


class BadRequest(DownstreamError):
    """The caller's request is malformed (400); the connection is closed after the answer."""

    http_status = 400


class BadFraming(BadRequest):
    """Content-Length / Transfer-Encoding make the body length ambiguous (400)."""


class HeadersTooLarge(DownstreamError):
    """Request line + headers exceed the byte or count limit (431)."""

    http_status = 431


class HeadTimeout(DownstreamError):
    """The request head did not arrive within the header timeout (408)."""

    http_status = 408


class UnsupportedTransferCoding(DownstreamError):
    """A transfer coding other than chunked (501, RFC 9112 section 6.1)."""

    http_status = 501


class UnsupportedVersion(DownstreamError):
    """An HTTP version other than 1.0/1.1 on an HTTP/1 connection (505)."""

    http_status = 505


class IncompleteBody(BadRequest):
    """The caller closed the connection before the body it announced was complete."""


class MalformedHeaders(DownstreamError):
    """An HTTP/2 header block that must not be forwarded (RFC 9113 section 8.1.1)."""

    http_status = 400
    h2_error_code = H2_PROTOCOL_ERROR


class ContentLengthMismatch(MalformedHeaders):
    """DATA did not add up to the declared Content-Length (RFC 9113 section 8.1.1)."""


class UpstreamProtocolError(UpstreamError):
    """An upstream (endpoint or peer) sent a malformed or ambiguous response (502)."""


class UpstreamClosed(UpstreamError):
    """The upstream closed the connection before the response was complete (502).

    ``response_started`` tells the retry logic whether any of the response was seen.
    """

    def __init__(self, message: str, *, response_started: bool) -> None:
        super().__init__(message)
        self.response_started = response_started


class UnknownAddress(DownstreamError):
    """Nothing at this address for this caller (404): the authority is not an L7 address of
    this mesh, it names an unknown site, no site knows the service, or (from a peer) no
    endpoint of it is exported to that peer."""

    http_status = 404


class RateLimited(DownstreamError):
    """A route's rate limit for this caller is used up (429); ``retry_after_s`` says when a
    token is back (sent as ``Retry-After``, whole seconds rounded up, RFC 9110 section 10.2.3)."""

    http_status = 429
    h2_error_code = H2_REFUSED_STREAM

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def response_headers(self) -> tuple[tuple[bytes, bytes], ...]:
        return ((b"retry-after", b"%d" % max(1, math.ceil(self.retry_after_s))),)


class ResetInstead(IsthmusError):
    """End the exchange without an answer: an HTTP/2 stream is reset, an HTTP/1.1 connection
    closed (a route's injected ``abort_reset`` fault)."""

    http_status = 502
    h2_error_code = H2_INTERNAL_ERROR
