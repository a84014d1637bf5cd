"""Deadlines that travel with a request and only ever shrink (pure, no trio).

Why: a caller that will give up after 2 s gains nothing from a gateway that keeps working on
its request for 15 s, and a chain of services (A calls B, which calls C) should share one
budget instead of each hop starting a fresh route timeout.  So:

* an endpoint learns what is left of its caller's deadline (``x-isthmus-deadline-ms``,
  :mod:`gateway.http.caller_headers`); when it calls on through its own gateway and passes
  that header on, the gateway takes it as the new request's budget -- but only to *shorten*
  the route timeout, never to extend it (:func:`from_caller`);
* between gateways the remaining budget travels in ``isthmus-deadline-ms``, computed when the
  tunnel is opened, so it shrinks by the time spent at each hop, and the receiving gateway caps
  it by its own route timeout (:mod:`gateway.http.overlay_headers`);
* a request whose deadline has already passed is answered 504 at once
  (:class:`DeadlineExpired`) without calling a site or an endpoint: nobody waits for the
  answer any more, and the work would only load a service that may be struggling.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import replace

from foundation.errors import DownstreamError, UpstreamError
from gateway.http.exchange import CallContext

#: The header an endpoint receives and may pass on when it calls onwards (milliseconds left).
CALLER_DEADLINE_HEADER = b"x-isthmus-deadline-ms"
_MS_RE = re.compile(rb"[0-9]{1,12}")


class DeadlineExpired(UpstreamError):
    """The request's deadline passed before it could be sent anywhere (504, fail fast)."""

    http_status = 504


class BadDeadline(DownstreamError):
    """A caller sent a malformed ``x-isthmus-deadline-ms`` (400)."""

    http_status = 400


def from_caller(
    headers: Sequence[tuple[bytes, bytes]], ctx: CallContext, *, now: float
) -> CallContext:
    """``ctx`` with its deadline shortened to the caller's ``x-isthmus-deadline-ms`` (from
    ``now``) when the caller sent a smaller budget; never later than ``ctx.deadline``."""
    value: bytes | None = None
    for name, v in headers:
        if name == CALLER_DEADLINE_HEADER:
            if value is not None:
                raise BadDeadline("more than one x-isthmus-deadline-ms header")
            value = v
    if value is None:
        return ctx
    value = value.strip(b" \t")
    if _MS_RE.fullmatch(value) is None:
        raise BadDeadline("x-isthmus-deadline-ms must be 1 to 12 digits (milliseconds left)")
    deadline = now + int(value) / 1000.0
    return ctx if deadline >= ctx.deadline else replace(ctx, deadline=deadline)


def check_not_expired(ctx: CallContext, *, now: float, what: str) -> None:
    """Raise :class:`DeadlineExpired` when ``ctx``'s deadline is at or before ``now``."""
    if ctx.deadline <= now:
        raise DeadlineExpired(f"{what}: the request's deadline had passed; not sent")
