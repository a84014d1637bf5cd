"""What the endpoint learns about its caller: ``x-isthmus-*`` headers set by the last gateway.

Why: a workload behind Isthmus cannot see the caller's certificate (the gateway terminated
it) nor the caller's site, and it should know how long the caller will wait.  The gateway
that delivers a request to an endpoint -- the destination site's gateway, or the local gateway
for a same-site call -- is the only one that knows all three for certain (it authenticated the
peer link, or the caller itself), so it and only it writes them:

==========================  ============================================================
``x-isthmus-caller-id``     the SPIFFE ID the original caller authenticated with (mTLS
                            to its local gateway); absent for an anonymous caller
``x-isthmus-caller-site``   the site where the request entered the overlay
``x-isthmus-deadline-ms``   milliseconds left of the request's deadline when it was sent
                            to the endpoint (the route timeout, or less if the caller's
                            site passed on less)
==========================  ============================================================

Any of these a caller sent itself is removed where the request enters the gateway, always
-- also for a service with the headers turned off -- so an endpoint never reads a value that
a caller typed, and a peer never receives one.  The gateway-to-gateway headers
(``isthmus-*``, :data:`~gateway.http.overlay_headers.INTERNAL_HEADERS`) are removed there too;
they never reach an endpoint (:data:`~gateway.http.overlay_headers.ENTRY_STRIPPED`).

Turned on or off per service by ``[site] caller_headers`` (default on) and
``[[caller_headers]]`` rules (see :class:`~gateway.config.model.CallerHeadersConfig`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from discovery.model import ServiceName
from gateway.config.model import CallerHeadersConfig
from gateway.http.exchange import CallContext, Request
from gateway.http.message import Headers, RequestHead
from gateway.http.overlay_headers import ENTRY_STRIPPED, WORKLOAD_CALLER_HEADERS

CALLER_ID = b"x-isthmus-caller-id"
CALLER_SITE = b"x-isthmus-caller-site"
DEADLINE_MS = b"x-isthmus-deadline-ms"
WORKLOAD_HEADERS = WORKLOAD_CALLER_HEADERS
#: A caller's request for its decision trace (:mod:`gateway.router.debug`): for the gateway
#: only, never passed to an endpoint.  The one ``x-isthmus-*`` field the entry keeps (the
#: router reads it), so the only one the endpoint's view still removes; a peer's tunnel drops
#: it at its entry (:data:`PEER_ENTRY_STRIPPED`).
DEBUG_HEADER = b"x-isthmus-debug"
PEER_ENTRY_STRIPPED = ENTRY_STRIPPED | {DEBUG_HEADER}
_REMOVED = PEER_ENTRY_STRIPPED
#: What a local caller's entry keeps for the router and the endpoint's view drops: the debug
#: request and the caller's own deadline budget (:mod:`gateway.http.deadline`).
_KEPT_AT_ENTRY = frozenset({DEBUG_HEADER, DEADLINE_MS})
WILDCARD = "*"


@dataclass(frozen=True, slots=True)
class CallerHeaderRules:
    """Whether a local service's endpoints get the caller headers: the first matching rule,
    else ``default``."""

    default: bool = True
    rules: tuple[CallerHeadersConfig, ...] = ()

    def enabled(self, service: ServiceName) -> bool:
        for rule in self.rules:
            if rule.service in (WILDCARD, service.name) and rule.namespace in (
                WILDCARD,
                service.namespace,
            ):
                return rule.enabled
        return self.default


def caller_fields(ctx: CallContext, *, now: float) -> Headers:
    """The caller headers for ``ctx`` at time ``now`` (``trio.current_time()`` units)."""
    left_ms = max(0, int((ctx.deadline - now) * 1000))
    fields: list[tuple[bytes, bytes]] = []
    if ctx.caller_id is not None:
        fields.append((CALLER_ID, str(ctx.caller_id).encode("ascii")))
    fields.append((CALLER_SITE, ctx.caller_site.encode("ascii")))
    fields.append((DEADLINE_MS, str(left_ms).encode("ascii")))
    return tuple(fields)


def _without(headers: Headers) -> Headers:
    return tuple((n, v) for n, v in headers if n not in _REMOVED)


def for_endpoint(request: Request, ctx: CallContext, *, now: float, enabled: bool) -> Request:
    """``request`` as an endpoint gets it: (if ``enabled``) the gateway's own caller headers
    appended.

    Appending is enough: every entry (the listeners, a peer's tunnel, a WebSocket handshake)
    removed what a caller or peer sent of these and of the ``isthmus-*`` fields
    (:data:`~gateway.http.overlay_headers.ENTRY_STRIPPED`) before the request was routed, so
    nothing is copied here on each request; only ``x-isthmus-debug`` and a caller's own
    ``x-isthmus-deadline-ms``, which the router reads, are looked for (one scan of the
    names) and dropped in the rare request that has them.
    """
    if any(name in _KEPT_AT_ENTRY for name, _ in request.headers):
        request = without_kept(request)
    if not enabled:
        return request
    added = caller_fields(ctx, now=now)
    head = request.h1_head
    if head is not None:  # keep the validated HTTP/1.1 head in step (our fields are valid)
        head = RequestHead(head.method, head.target, head.http_version, head.headers + added)
    return Request(
        request.method,
        request.scheme,
        request.authority,
        request.path,
        request.headers + added,
        request.protocol,
        head,
    )


def without_kept(request: Request) -> Request:
    """``request`` without the fields a caller's entry kept for the router (the debug request,
    the caller's own deadline budget): what goes on to an endpoint or a peer."""

    def kept(headers: Headers) -> Headers:
        return tuple((n, v) for n, v in headers if n not in _KEPT_AT_ENTRY)

    head = request.h1_head
    if head is not None:
        head = RequestHead(head.method, head.target, head.http_version, kept(head.headers))
    return Request(
        request.method,
        request.scheme,
        request.authority,
        request.path,
        kept(request.headers),
        request.protocol,
        head,
    )


def strip_all(headers: Sequence[tuple[bytes, bytes]]) -> Headers:
    """``headers`` without any caller or gateway-to-gateway header (for tests and adapters)."""
    return _without(tuple(headers))
