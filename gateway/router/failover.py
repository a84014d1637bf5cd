"""When a failed attempt may move on to the next site (pure, no trio).

Theory of operation
-------------------
The routing view lists the sites able to serve a service, best first (the local site first
when it has healthy endpoints).  The router walks that list.  It moves on only when nothing the
caller sent can have been acted on and nothing of a response has reached the caller:

* the failure came before the response head was sent downstream, and
* no byte of the request body was consumed (bodies are streamed, never buffered whole, so a
  consumed body cannot be replayed -- unless :mod:`gateway.router.replay` still keeps all of
  it, which the retrying walk of :mod:`gateway.router.retry` checks), and
* the failure says "this site did no work": the link was down or closing when the stream was
  to be opened, the peer refused the stream (``REFUSED_STREAM``), the local cluster has no
  healthy endpoint, a connection attempt failed, or a tunnel's ``CONNECT`` was answered
  502/503.  A link that dies *after* the request went out leaves it unknown whether the
  peer acted: only an idempotent request
  (:data:`~gateway.http.message.IDEMPOTENT_METHODS`) moves on then.

Everything else stands: a reset after the peer took the request, a timeout, a protocol error,
a 403 from the remote policy.  Retrying those could run a request twice or hide a real error.
Classifying an exception as "did no work" needs the exception types (trio-based modules); the
router does that and hands this module booleans.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Attempt:
    """What happened at one site (for the error body when every site failed)."""

    site: str
    reason: str


def may_fail_over(*, no_work_done: bool, head_sent: bool, body_consumed: bool) -> bool:
    """True if the request may be sent to the next site."""
    return no_work_done and not head_sent and not body_consumed


def candidate_sites(sites: tuple[str, ...]) -> tuple[str, ...]:
    """The sites to try, in the view's order, each once."""
    return tuple(dict.fromkeys(sites))


def describe(attempts: list[Attempt]) -> str:
    """``"b: link down; c: no healthy endpoint"`` for an error body."""
    return "; ".join(f"{a.site}: {a.reason}" for a in attempts) or "no site was tried"
