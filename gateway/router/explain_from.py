"""``isthmus explain --from SITE`` for a peer site: ask that site's gateway for its trace.

Why the peer computes it: a request entering at site B is routed by B's gateway -- B's
``[[routes]]``, B's view of the sites in failover order, B's links -- which this gateway can
only guess.  So the gateway asked (the *asking* site, A) sends the question over its link to
B, and B answers with the trace it computes as if the request had entered there
(:mod:`gateway.inbound.explain_from_answer`); B in turn asks the destination it would pick
for its verdict, with the ordinary one-site question (``isthmus-explain: v1``).

Wire: a stream carrying the request's own header block (as a tunnel would, with the caller's
SPIFFE ID in ``isthmus-caller-id``) plus ``isthmus-explain: from-v1`` (:data:`FROM_VERSION`).
B answers ``:status 200`` with ``{"trace": {...}}``, or an error status with ``{"error":
"..."}``: 403 when it does not explain its routing to this site, 503 when it is busy or its
trace did not finish in time, 400 for a question it cannot read.

One hop only: B answers a ``from-v1`` question with :func:`~gateway.router.explain_run.
run_explain`, which sends only ``v1`` questions, and ``v1`` is answered from the answering
site's own state without asking anyone.  No gateway ever forwards a ``from-v1`` question: it
is sent only by the admin API of the gateway an operator asks (:mod:`gateway.admin.
explain_view`).

Trust: B's answer is a peer's text shown on an operator's terminal, so it is checked and
rebuilt here (:func:`trace_from_answer`): known keys only, strings bounded, control characters
(terminal escapes) removed and credentials redacted.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio

from foundation.errors import IsthmusError
from foundation.redact import redact
from gateway.cluster.peer import tunnel_request_headers
from gateway.http.exchange import CallContext, Request
from gateway.http.overlay_headers import EXPLAIN_HEADER
from overlay.h2.stream import TunnelError
from overlay.peering.pool import StreamOpener

#: The value of ``isthmus-explain`` that asks for a whole trace ("explain from there").
FROM_VERSION = b"from-v1"
#: The answer's body is at most this long (the asking gateway reads no more).
MAX_TRACE_BYTES = 32 * 1024
#: How long the asking gateway waits for the answer: the answering site bounds its own work
#: at :data:`~gateway.inbound.explain_from_answer.ANSWER_BUDGET_S`, below this.
FROM_TIMEOUT_S = 20.0
#: Bounds on what a peer's trace may hold (it is shown as it is, so it is kept small).
MAX_CANDIDATES = 64
MAX_TEXT = 1024
MAX_LIMITS = 32


class ExplainFromError(IsthmusError):
    """The trace from another site could not be had (the message says why)."""


class FromSiteUnreachable(ExplainFromError):
    """No live link to the site, or no answer in time (503/504: the CLI's exit 3)."""

    http_status = 503


class FromSiteTimedOut(FromSiteUnreachable):
    http_status = 504


class FromSiteRefused(ExplainFromError):
    """The site does not explain its routing to this one, or cannot (403: the CLI's exit 2)."""

    http_status = 403


class FromSiteCannot(ExplainFromError):
    """The site runs a version that does not answer the question (501: the CLI's exit 2)."""

    http_status = 501


def clean(value: Any, limit: int = MAX_TEXT) -> str:
    """A peer's string as it may be shown: bounded, printable, credentials redacted."""
    text = value if isinstance(value, str) else ""
    text = "".join(c if c.isprintable() else "?" for c in text[:limit])
    return redact(text)


def _int_or_none(value: Any, lo: int, hi: int) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and lo <= value <= hi:
        return value
    return None


def _endpoint(doc: Any) -> dict[str, Any] | None:
    if not isinstance(doc, dict):
        return None
    port = _int_or_none(doc.get("port"), 0, 65535)
    if port is None or not isinstance(doc.get("address"), str):
        return None
    return {
        "address": clean(doc["address"], 255),
        "port": port,
        "protocol": clean(doc.get("protocol"), 32),
        "balancer": clean(doc.get("balancer"), 32),
    }


def _choice(value: Any, allowed: tuple[str, ...], default: str) -> str:
    return value if isinstance(value, str) and value in allowed else default


def _candidate(doc: Any) -> dict[str, Any] | None:
    if not isinstance(doc, dict) or not isinstance(doc.get("site"), str):
        return None
    policy = doc.get("policy")
    return {
        "site": clean(doc["site"], 63),
        "decision": _choice(doc.get("decision"), ("chosen", "skipped", "not reached"), "?"),
        "reason": clean(doc.get("reason")),
        "link": _choice(doc.get("link"), ("local", "up", "down"), "?"),
        "policy": None
        if policy is None
        else _choice(policy, ("allowed", "denied", "not reached", "unknown"), "unknown"),
        "endpoint": _endpoint(doc.get("endpoint")),
        "answered": doc.get("answered") is not False,
    }


def trace_from_answer(doc: Any) -> dict[str, Any]:
    """A peer's trace (``Trace.as_json`` at the peer) rebuilt from its known keys only.

    Raises :class:`FromSiteCannot` when it is not a trace at all.  Strings are bounded and
    cleaned (:func:`clean`); lists are cut at :data:`MAX_CANDIDATES` / :data:`MAX_LIMITS`.
    """
    if not isinstance(doc, dict) or not isinstance(doc.get("authority"), str):
        raise FromSiteCannot("the answer is not a trace")
    raw_candidates = doc.get("candidates")
    candidates = raw_candidates if isinstance(raw_candidates, list) else []
    raw_limits = doc.get("limits")
    limits = raw_limits if isinstance(raw_limits, dict) else {}
    address, site = doc.get("address"), doc.get("site")
    return {
        "authority": clean(doc["authority"], 255),
        "address": None if address is None else clean(address, 255),
        "route": clean(doc.get("route")) or "default",
        "status": _int_or_none(doc.get("status"), 100, 599),
        "outcome": clean(doc.get("outcome")),
        "site": None if site is None else clean(site, 63),
        "endpoint": _endpoint(doc.get("endpoint")),
        "candidates": [c for c in map(_candidate, candidates[:MAX_CANDIDATES]) if c is not None],
        "limits": {clean(k, 64): clean(v, 64) for k, v in list(limits.items())[:MAX_LIMITS]},
        "sent": False,
    }


def answer_to_trace(site: str, status: bytes, body: bytes) -> dict[str, Any]:
    """The trace in a peer's answer (pure), or the typed error that answer means.

    A 200 that is not ``{"trace": ...}`` comes from a gateway that predates the question:
    it answered it as the one-site question (``v1``), so it is "cannot", never a trace.
    """
    if len(body) > MAX_TRACE_BYTES:
        raise FromSiteCannot(f"site {site}'s answer is larger than {MAX_TRACE_BYTES} bytes")
    try:
        doc = json.loads(body)
    except ValueError:
        doc = None
    error = clean(doc.get("error")) if isinstance(doc, dict) else ""
    if status == b"403":
        raise FromSiteRefused(f"site {site} refuses to explain: {error or 'HTTP 403'}")
    if status in (b"503", b"504"):
        raise FromSiteUnreachable(f"site {site} could not explain: {error or 'busy'}")
    if status == b"200" and isinstance(doc, dict) and "trace" in doc:
        return trace_from_answer(doc["trace"])
    shown = clean(status.decode("ascii", "replace"), 3)
    if status != b"200" and error:
        raise FromSiteCannot(f"site {site} cannot explain (HTTP {shown}): {error}")
    raise FromSiteCannot(
        f"site {site} does not answer explain --from questions (HTTP {shown}): its gateway "
        "runs an older version; ask its admin API instead"
    )


async def ask_from(
    conn: StreamOpener,
    site: str,
    request: Request,
    ctx: CallContext,
    *,
    local_site: str,
    clock: Callable[[], float] = trio.current_time,
    timeout: float = FROM_TIMEOUT_S,  # noqa: ASYNC109 -- one budget for the whole question
) -> dict[str, Any]:
    """Ask the site behind ``conn`` for the trace of ``request`` entering there (see the
    module docstring); raises an :class:`ExplainFromError` when there is none."""
    headers = (
        *tunnel_request_headers(request, ctx, local_site=local_site, now=clock()),
        (EXPLAIN_HEADER, FROM_VERSION),
    )
    with trio.move_on_after(timeout):
        try:
            stream = await conn.open_stream(headers, end_stream=True)
        except (TunnelError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise FromSiteUnreachable(f"the link to site {site} failed: {exc}") from None
        try:
            head = dict(await stream.response_headers())
            body = b""
            while len(body) <= MAX_TRACE_BYTES:
                piece = await stream.receive_some(MAX_TRACE_BYTES + 1 - len(body))
                if not piece:
                    break
                body += piece
        except (TunnelError, trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            raise FromSiteUnreachable(f"site {site} did not answer: {exc}") from None
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
        return answer_to_trace(site, head.get(b":status", b""), body)
    raise FromSiteTimedOut(f"site {site} did not answer within {timeout:g}s")
