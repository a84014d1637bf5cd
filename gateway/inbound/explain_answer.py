"""The destination's answer to "what would you do with this request?" (``isthmus explain``).

Why the destination answers: only it knows its export consent, its policy and its endpoints'
health, and the origin must not guess them.  The origin asks over the link (the same mTLS as
every request on it, so the peer is authenticated and vouches for its caller exactly as for
a real request: :func:`~gateway.http.overlay_headers.decode_context`), with a stream that
carries the request's own header block plus the internal ``isthmus-explain`` field.  The
answer runs the same pure steps as a real request -- :func:`~gateway.inbound.request.
parse_request`, :func:`~gateway.inbound.admission.admit` (address, consent, policy) -- and
then the local cluster's *preview* of its pick (:meth:`~gateway.cluster.local.LocalCluster.
preview`): nothing reaches an endpoint, the balancer does not move, no request is counted.

Wire: the answer is ``:status 200`` with a small JSON body (:data:`MAX_ANSWER_BYTES`):
``status`` (200: it would forward), ``policy`` (allowed / denied / not reached), ``reason``,
``fails_over`` (the origin would move on: this site would do no work) and ``endpoint``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from foundation.errors import IsthmusError
from gateway.cluster.errors import SiteDidNoWork
from gateway.cluster.local import LocalCluster
from gateway.config.model import PolicyConfig
from gateway.http.overlay_headers import EXPLAIN_HEADER, decode_context
from gateway.inbound.admission import admit, exported_to
from gateway.inbound.request import parse_request
from gateway.policy import PolicyDenied
from gateway.router.explain import EndpointPick
from overlay.federation.config import ExportConfig
from overlay.h2.stream import H2Stream

#: The answer's body is at most this long (the origin reads no more).
MAX_ANSWER_BYTES = 8 * 1024
#: The only version of the question this gateway answers.
EXPLAIN_VERSION = b"v1"


def is_question(raw: Sequence[tuple[bytes, bytes]]) -> bool:
    """Whether a peer's stream is a question (carries ``isthmus-explain``), not a request."""
    for name, _ in raw:  # noqa: SIM110 -- a plain loop: half of any(...)'s cost, every stream
        if name == EXPLAIN_HEADER:
            return True
    return False


def question_version(raw: Sequence[tuple[bytes, bytes]]) -> bytes:
    """The value of a question's ``isthmus-explain`` field (the first one)."""
    return next((value for name, value in raw if name == EXPLAIN_HEADER), b"")


def verdict(
    raw: Sequence[tuple[bytes, bytes]],
    *,
    peer_site: str,
    local_site: str,
    mesh_domain: str,
    cluster: LocalCluster,
    export_rules: Sequence[ExportConfig],
    policies: Sequence[PolicyConfig],
    now: float,
    route_timeout: float,
) -> dict[str, Any]:
    """What this site would do with the request in ``raw`` from ``peer_site`` (see above)."""
    policy = "not reached"
    try:
        request = parse_request(raw)
        ctx = decode_context(raw, peer_site=peer_site, now=now, route_timeout=route_timeout)
        try:
            service = admit(
                request,
                ctx,
                peer_site=peer_site,
                local_site=local_site,
                mesh_domain=mesh_domain,
                catalog=cluster.catalog.latest,
                export_rules=export_rules,
                policies=policies,
            )
        except PolicyDenied:
            policy = "denied"
            raise
        policy = "allowed"
        order = cluster.preview(service, exported_to(export_rules, peer_site), request=request)
    except IsthmusError as exc:
        fails_over = isinstance(exc, SiteDidNoWork) and exc.retry_elsewhere
        return {
            "status": exc.http_status,
            "policy": policy,
            "reason": str(exc)[:1024],
            "fails_over": fails_over,
            "endpoint": None,
        }
    ep = order[0]
    pick = EndpointPick(ep.address, ep.port, ep.protocol, cluster.balancer_kind(service))
    return {
        "status": 200,
        "policy": policy,
        "reason": "",
        "fails_over": False,
        "endpoint": pick.as_json(),
    }


async def answer(stream: H2Stream, body: Callable[[], dict[str, Any]]) -> None:
    """Send ``body()`` as the answer (it never fails: a bug is a 500 answer, not a reset)."""
    try:
        doc = body()
    except Exception as exc:  # a bug must cost this answer, never the link
        doc = {"status": 500, "policy": "", "reason": f"{type(exc).__name__}", "endpoint": None}
    await _send(stream, 200, json.dumps(doc, sort_keys=True).encode()[:MAX_ANSWER_BYTES])


async def send_json(stream: H2Stream, status: int, doc: Any, *, limit: int) -> None:
    """Answer ``doc`` as JSON with ``status``; a body over ``limit`` bytes (the asker reads
    no more) is replaced by a 503 saying so."""
    payload = json.dumps(doc, sort_keys=True).encode()
    if len(payload) > limit:
        status = 503
        payload = json.dumps({"error": f"the answer is larger than {limit} bytes"}).encode()
    await _send(stream, status, payload)


async def _send(stream: H2Stream, status: int, payload: bytes) -> None:
    head = [
        (b":status", b"%d" % status),
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(payload)),
    ]
    await stream.send_response(head, payload)
