"""The ``isthmus-*`` headers one gateway sets for the next: encode, decode, strip (pure).

Why one module: these fields are trusted *only* on a link between authenticated gateways
(linkerd's identity-header layer is the model).  The exit that sends a tunnel encodes them
(:func:`encode_context`, :func:`encode_reason`), the inbound side that receives one decodes
them (:func:`decode_context`, :func:`decode_reason`), and every other edge strips them
(:func:`strip`, :func:`strip_request`): a caller or an endpoint never sets nor sees one.
Keeping the names, the encoding and the parsing together means a new field cannot be added
on one side and forgotten on the other.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from hpack import NeverIndexedHeaderTuple

from foundation.errors import DownstreamError
from foundation.names import label_problem
from foundation.spiffe_id import SpiffeId, SpiffeIdError
from gateway.http.exchange import CallContext, Request, Response, standard_reason
from gateway.http.exchange_timer import with_stream_limits
from gateway.http.message import Headers
from gateway.policy import PolicyDenied

CALLER_ID_HEADER = b"isthmus-caller-id"  # SPIFFE ID of the authenticated original caller
CALLER_SITE_HEADER = b"isthmus-caller-site"  # site where the request entered the overlay
DEADLINE_HEADER = b"isthmus-deadline-ms"  # remaining time budget in milliseconds
#: On a link's *response*: the HTTP/1.1 endpoint's reason phrase, when it is not the standard
#: one for the status (HTTP/2 has no reason phrase; see ``Response.reason``).
REASON_HEADER = b"isthmus-reason"
#: The request ID of the origin gateway's access line (32 hex digits), so the destination's
#: line joins it.
REQUEST_ID_HEADER = b"isthmus-request-id"
#: Marks a stream as a question, not a request: "what would you do with this request?"
#: (``isthmus explain``; :mod:`gateway.inbound.explain_answer`).  Internal, so a caller can
#: never turn its request into one.
EXPLAIN_HEADER = b"isthmus-explain"
#: Accepted only from an authenticated peer gateway, stripped from every other caller and
#: never sent to an endpoint.
INTERNAL_HEADERS = frozenset(
    {
        CALLER_ID_HEADER,
        CALLER_SITE_HEADER,
        DEADLINE_HEADER,
        REASON_HEADER,
        REQUEST_ID_HEADER,
        EXPLAIN_HEADER,
    }
)
#: What the gateway that delivers a request tells the endpoint about its caller
#: (:mod:`gateway.http.caller_headers`); no caller or peer may set them.
WORKLOAD_CALLER_HEADERS = frozenset(
    {b"x-isthmus-caller-id", b"x-isthmus-caller-site", b"x-isthmus-deadline-ms"}
)
#: Removed from every request where it enters the gateway (the HTTP/1.1 and HTTP/2
#: listeners, a peer's tunnel, a WebSocket handshake), once: everything downstream of the
#: entry -- the router, a peer's link, an endpoint -- then never sees a value a caller typed,
#: and the local cluster only appends its own caller headers instead of copying and
#: filtering every request's fields again.
ENTRY_STRIPPED = INTERNAL_HEADERS | WORKLOAD_CALLER_HEADERS
#: A local caller's ``x-isthmus-deadline-ms`` is its own time budget, which the router reads to
#: shorten the request's deadline (:mod:`gateway.http.deadline`; never to extend it): kept at
#: a caller's entry like ``x-isthmus-debug``, dropped before an endpoint (which gets the
#: gateway's own value) and at a peer's entry (the link carries ``isthmus-deadline-ms``).
CALLER_ENTRY_STRIPPED = ENTRY_STRIPPED - {b"x-isthmus-deadline-ms"}

_DEADLINE_RE = re.compile(rb"[0-9]{1,12}")
_REQUEST_ID_RE = re.compile(rb"[0-9a-f]{32}")
#: Site names repeat on every request; the check is pure, so it is remembered (bounded).
_site_problem = functools.lru_cache(maxsize=1024)(label_problem)


class BadInternalHeader(DownstreamError):
    """A peer sent a malformed ``isthmus-*`` header (400)."""

    http_status = 400


# -- strip -------------------------------------------------------------------------------------


def strip(fields: Sequence[tuple[bytes, bytes]]) -> Headers:
    """``fields`` without any internal header."""
    return tuple((n, v) for n, v in fields if n not in INTERNAL_HEADERS)


def strip_request(request: Request) -> Request:
    """The same request with every internal header removed (itself when it had none)."""
    kept = strip(request.headers)
    if len(kept) == len(request.headers):
        return request
    return Request(
        request.method, request.scheme, request.authority, request.path, kept, request.protocol
    )


# -- request: the call context -----------------------------------------------------------------


def encode_context(ctx: CallContext, *, local_site: str, now: float) -> Headers:
    """The headers this gateway puts on a tunnel (never a caller's): the site the request
    entered the overlay at, the remaining deadline in milliseconds, the caller's SPIFFE ID
    when it authenticated with one, the request ID when the exchange is observed."""
    remaining_ms = max(0, int((ctx.deadline - now) * 1000))
    out = [(CALLER_SITE_HEADER, local_site.encode()), (DEADLINE_HEADER, b"%d" % remaining_ms)]
    if ctx.caller_id is not None:
        out.append((CALLER_ID_HEADER, str(ctx.caller_id).encode()))
    if ctx.request_id:
        # Never indexed (RFC 7541 section 7.1.3): a value that is new on every request would
        # only evict the link's useful HPACK entries (measured: scripts/bench_observe.py).
        out.append(NeverIndexedHeaderTuple(REQUEST_ID_HEADER, ctx.request_id.encode("ascii")))
    return tuple(out)


def _one(headers: Sequence[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    values = [v for n, v in headers if n == name]
    if len(values) > 1:
        raise BadInternalHeader(f"more than one {name.decode()} header")
    return values[0] if values else None


def decode_context(
    headers: Sequence[tuple[bytes, bytes]],
    *,
    peer_site: str,
    now: float,
    route_timeout: float,
    idle_timeout: float | None = None,
    max_duration: float | None = None,
) -> CallContext:
    """The call context a peer gateway vouches for.

    ``isthmus-caller-site`` defaults to the peer's site; any other site is a 403, since a
    request crosses one link and a peer vouches for its own callers only.
    ``isthmus-caller-id`` is a strict SPIFFE ID (malformed: 400).  ``isthmus-deadline-ms`` is
    capped by ``route_timeout``; like it, it bounds the time to the response head only.
    ``from_peer`` is always the authenticated peer site, never a header.
    """
    site_raw = _one(headers, CALLER_SITE_HEADER)
    caller_site = peer_site
    if site_raw is not None:
        caller_site = site_raw.decode("ascii", "replace")
        problem = _site_problem(caller_site)
        if problem:
            raise BadInternalHeader(f"isthmus-caller-site: {problem}")
        if caller_site != peer_site:
            # Requests enter the overlay at their own site's gateway and cross one link (the
            # origin fails over, nobody relays), so a peer vouches for its own callers only;
            # otherwise one gateway could borrow another site's ``allow_sites``.
            raise PolicyDenied(f"peer {peer_site!r} may not vouch for callers of {caller_site!r}")
    caller_id: SpiffeId | None = None
    id_raw = _one(headers, CALLER_ID_HEADER)
    if id_raw is not None:
        try:
            caller_id = SpiffeId.parse(id_raw.decode("ascii"))
        except (UnicodeDecodeError, SpiffeIdError) as exc:
            raise BadInternalHeader(f"isthmus-caller-id is not a SPIFFE ID: {exc}") from None
    budget = route_timeout
    deadline_raw = _one(headers, DEADLINE_HEADER)
    if deadline_raw is not None:
        if _DEADLINE_RE.fullmatch(deadline_raw) is None:
            raise BadInternalHeader("isthmus-deadline-ms must be 1 to 12 digits")
        budget = min(budget, int(deadline_raw) / 1000.0)
    request_id = ""
    id_raw = _one(headers, REQUEST_ID_HEADER)
    if id_raw is not None:
        if _REQUEST_ID_RE.fullmatch(id_raw) is None:
            raise BadInternalHeader("isthmus-request-id must be 32 lowercase hex digits")
        request_id = id_raw.decode("ascii")
    ctx = CallContext(
        caller_site=caller_site,
        caller_id=caller_id,
        deadline=now + budget,
        from_peer=peer_site,
        request_id=request_id,
    )
    # The carried deadline bounds the response head only; the stream limits are this
    # gateway's own, counted from the stream's arrival.
    return with_stream_limits(ctx, now=now, idle_timeout=idle_timeout, max_duration=max_duration)


# -- response: the reason phrase ---------------------------------------------------------------


def encode_reason(response: Response) -> Headers:
    """The ``isthmus-reason`` field a gateway adds to a response it sends to a peer: only
    for a reason phrase that differs from the standard one (nothing on the usual path).
    Surrounding whitespace, which an HTTP/2 field value may not have, is dropped."""
    reason = response.reason.strip(b" \t")
    if not reason or reason == standard_reason(response.status):
        return ()
    return ((REASON_HEADER, reason),)


def decode_reason(headers: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The peer's HTTP/1.1 endpoint's own reason phrase (b"" when it sent none)."""
    return next((v for n, v in headers if n == REASON_HEADER), b"")
