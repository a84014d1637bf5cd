"""Answering ``isthmus explain --from THIS-SITE`` asked at a peer: this site's whole trace.

Why here: a request entering at this site is routed by this gateway, so only it can say what
would happen (its ``[[routes]]``, its sites in failover order, its links, the verdict of the
destination it would pick).  The peer whose operator asked forwards the question over its
link (:mod:`gateway.router.explain_from`); this module computes the trace as if the request
had entered here, with the same function the admin API's ``/explain`` uses, and answers it.

Who may ask: the question arrives on a link, so the asking peer is an authenticated gateway
(mTLS, SPIFFE, per trust domain), and ``from_peer`` is that peer's site, never a header.  A
trace shows this site's routing -- its sites, links, routes and endpoints, including services
it exports to nobody -- so only the sites listed in ``[debug] explain_peers`` get one (empty,
the default: nobody; ``"*"``: every peer); any other is answered 403.

Why it cannot amplify: the trace is computed by :func:`~gateway.router.explain_run.
run_explain`, which asks the destinations only the one-site question (``isthmus-explain:
v1``, answered from the destination's own state); nothing here sends a ``from-v1`` question
on, so a question travels one hop and fans out to at most one small question per candidate
site.  At most :data:`MAX_CONCURRENT` questions are answered at once (then 503: busy), each
within :data:`ANSWER_BUDGET_S` (then 503), with at most :data:`MAX_QUESTION_HEADERS` caller
fields of at most :data:`MAX_QUESTION_VALUE_BYTES` each (else 400).  Nothing is sent to an
endpoint and nothing is counted or logged; no header value appears in the answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any

import trio

from foundation.errors import DownstreamError, IsthmusError
from foundation.redact import redact
from gateway.http.exchange import CallContext, Request
from gateway.http.overlay_headers import decode_context
from gateway.inbound.explain_answer import send_json
from gateway.inbound.request import parse_request
from gateway.router.explain import Trace
from gateway.router.explain_from import MAX_TRACE_BYTES
from overlay.h2.stream import H2Stream

#: Questions answered at once by this gateway (more: 503 busy, nothing computed).
MAX_CONCURRENT = 4
#: The time this gateway spends on one trace (the asking gateway waits a little longer).
ANSWER_BUDGET_S = 15.0
#: The caller's fields a question may carry, and the size of each value (as the admin API).
MAX_QUESTION_HEADERS = 32
MAX_QUESTION_VALUE_BYTES = 8 * 1024

#: Computes the trace of a request entering this site (``run_explain`` on this gateway).
Explainer = Callable[[Request, CallContext], Awaitable[Trace]]


class QuestionTooLarge(DownstreamError):
    """The question carries more caller fields than allowed, or a longer value (400)."""


def question_of(
    raw: Sequence[tuple[bytes, bytes]],
    *,
    peer_site: str,
    local_site: str,
    now: float,
    route_timeout: float,
) -> tuple[Request, CallContext]:
    """The request to explain and its context as if it entered here (pure).

    The caller's SPIFFE ID is the one the asking peer vouches for (``isthmus-caller-id``,
    checked as on any request from it); the caller's site is this one, since the question is
    what this site would do with a request of its own caller.
    """
    request = parse_request(raw)
    vouched = decode_context(raw, peer_site=peer_site, now=now, route_timeout=route_timeout)
    if len(request.headers) > MAX_QUESTION_HEADERS:
        raise QuestionTooLarge(f"a question carries at most {MAX_QUESTION_HEADERS} fields")
    if any(len(value) > MAX_QUESTION_VALUE_BYTES for _, value in request.headers):
        raise QuestionTooLarge(f"a field value is at most {MAX_QUESTION_VALUE_BYTES} bytes")
    ctx = CallContext(
        caller_site=local_site, caller_id=vouched.caller_id, deadline=now + route_timeout
    )
    return request, ctx


def allowed(peers: Collection[str], peer_site: str) -> bool:
    """Whether ``peer_site`` may have this site's trace (``[debug] explain_peers``)."""
    return "*" in peers or peer_site in peers


class FromAnswerer:
    """Answers ``from-v1`` questions on this gateway's east-west streams (see above)."""

    def __init__(
        self,
        *,
        local_site: str,
        peers: Collection[str],
        explainer: Explainer,
        route_timeout: float = 15.0,
        clock: Callable[[], float] = trio.current_time,
        budget: float = ANSWER_BUDGET_S,
        max_concurrent: int = MAX_CONCURRENT,
    ) -> None:
        self.local_site = local_site
        self.peers = frozenset(peers)
        self.explainer = explainer
        self.route_timeout = route_timeout
        self.clock = clock
        self.budget = budget
        self.max_concurrent = max_concurrent
        self._running = 0

    async def __call__(self, peer_site: str, stream: H2Stream) -> None:
        status, doc = await self.answer(peer_site, stream.request_headers)
        await send_json(stream, status, doc, limit=MAX_TRACE_BYTES)

    async def answer(
        self, peer_site: str, raw: Sequence[tuple[bytes, bytes]]
    ) -> tuple[int, dict[str, Any]]:
        """The status and JSON body of the answer to ``peer_site``'s question."""
        here = self.local_site
        if not allowed(self.peers, peer_site):
            why = f"site {here} does not explain its routing to site {peer_site}"
            why += " (its [debug] explain_peers)"
            return 403, {"error": why}
        if self._running >= self.max_concurrent:
            return 503, {"error": f"site {here} is busy with {self._running} other questions"}
        try:
            request, ctx = question_of(
                raw,
                peer_site=peer_site,
                local_site=here,
                now=self.clock(),
                route_timeout=self.route_timeout,
            )
        except IsthmusError as exc:
            return 400, {"error": redact(str(exc))[:1024]}
        self._running += 1
        try:
            with trio.move_on_after(self.budget):
                trace = await self.explainer(request, ctx)
                return 200, {"trace": trace.as_json(), "site": here}
            return 503, {"error": f"its trace did not finish within {self.budget:g}s"}
        except Exception as exc:  # a bug must cost this answer, never the link
            return 500, {"error": f"site {here} failed to explain: {type(exc).__name__}"}
        finally:
            self._running -= 1
