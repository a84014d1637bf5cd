"""``GET /explain?url=...``: the decision trace of one request, without sending it.

Query parameters: ``url`` (``http://api.default.isthmus/path`` or just the authority;
required), ``method`` (default ``GET``), ``header`` (``name: value``, repeatable: what
``[[routes]]`` header rules and hash keys would see), ``caller_id`` (the SPIFFE ID the caller
would authenticate with: peers' ``allow_ids`` policies read it) and ``from`` (the site the
request enters at; default this one).  The answer is :meth:`gateway.router.explain.Trace.
as_json` (200) plus ``computed_by`` (the site whose gateway computed it), or 400 with
``error`` for a malformed question.  Header values are never echoed back.

``from`` a peer site: that site routes the request, so the question goes to its gateway over
the link (:mod:`gateway.router.explain_from`) and its trace is the answer, with
``asked_through`` naming this site.  An unknown site is a 400 listing the known ones; a peer
whose link is down, or that does not answer in time, a 503/504; a peer that refuses (its
``[debug] explain_peers``) a 403; one that cannot answer (an older version) a 501.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from foundation.names import label_problem
from foundation.spiffe_id import SpiffeId, SpiffeIdError
from gateway.admin.server import Query, Reply
from gateway.cluster.local import LocalCluster
from gateway.config.model import LimitsConfig
from gateway.http.exchange import CallContext, Request
from gateway.router.explain_from import FROM_TIMEOUT_S, ExplainFromError, ask_from
from gateway.router.explain_run import limits_of, run_explain
from gateway.router.route import Router

MAX_HEADERS = 32
MAX_HEADER_BYTES = 8 * 1024
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]{1,256}")
_METHOD = re.compile(r"[A-Z]{1,16}")
#: Fields a request over the overlay never carries as they are (connection-specific).
_REFUSED = frozenset({"connection", "keep-alive", "transfer-encoding", "upgrade", "te", "host"})


class BadQuestion(ValueError):
    """The question is malformed (400); the message says which parameter and why."""


def _one(params: Mapping[str, list[str]], name: str, default: str | None = None) -> str | None:
    values = params.get(name, [])
    if len(values) > 1:
        raise BadQuestion(f"{name}: given more than once")
    return values[0] if values else default


def parse_question(params: Mapping[str, list[str]]) -> tuple[Request, SpiffeId | None, str | None]:
    """The request to explain, the caller's SPIFFE ID and the ``from`` site (pure)."""
    url = _one(params, "url")
    if not url:
        raise BadQuestion("url: required (e.g. http://api.default.isthmus/path)")
    split = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if not split.netloc or any(c in url for c in "\r\n\0 "):
        raise BadQuestion(f"url: {url!r} has no authority")
    path = split.path or "/"
    if split.query:
        path += "?" + split.query
    method = (_one(params, "method", "GET") or "GET").upper()
    if _METHOD.fullmatch(method) is None:
        raise BadQuestion("method: 1 to 16 letters")
    headers: list[tuple[bytes, bytes]] = []
    given = params.get("header", [])
    if len(given) > MAX_HEADERS:
        raise BadQuestion(f"header: at most {MAX_HEADERS}")
    for field in given:
        name, sep, value = field.partition(":")
        name, value = name.strip().lower(), value.strip()
        if not sep or _TOKEN.fullmatch(name) is None:
            raise BadQuestion("header: 'name: value' with a token name")
        if name in _REFUSED or len(value) > MAX_HEADER_BYTES or any(c in value for c in "\r\n\0"):
            raise BadQuestion(f"header {name}: not allowed here, or its value is")
        headers.append((name.encode("ascii"), value.encode("utf-8")))
    caller_id = None
    raw_id = _one(params, "caller_id")
    if raw_id:
        try:
            caller_id = SpiffeId.parse(raw_id)
        except SpiffeIdError as exc:
            raise BadQuestion(f"caller_id: {exc}") from None
    request = Request(
        method.encode("ascii"),
        b"http",
        split.netloc.encode("idna") if not split.netloc.isascii() else split.netloc.encode(),
        path.encode("utf-8"),
        tuple(headers),
    )
    return request, caller_id, _one(params, "from")


def explain_query(
    router: Router, cluster: LocalCluster, limits: Callable[[], LimitsConfig]
) -> Query:
    """The ``/explain`` query of this gateway (see the module docstring); ``limits`` reads
    the live ``[limits]`` (a reload may change them)."""

    async def query(params: Mapping[str, list[str]]) -> Any:
        try:
            request, caller_id, origin = parse_question(params)
        except (BadQuestion, UnicodeError) as exc:
            return Reply(400, {"error": str(exc)})
        if origin is not None and origin != router.local_site:
            return await _explain_from(router, origin, request, caller_id)
        now = router.clock()
        ctx = CallContext(
            caller_site=router.local_site,
            caller_id=caller_id,
            deadline=now + router.route_timeout,
        )
        trace = await run_explain(
            router, cluster, request, ctx, limits=limits_of(limits(), cluster.connect_timeout)
        )
        return {**trace.as_json(), "computed_by": router.local_site}

    return query


def unknown_site(origin: str, local_site: str, peers: Iterable[str]) -> str | None:
    """Why ``origin`` cannot be asked (not a site name, or no such site), or None (pure)."""
    problem = label_problem(origin)
    if problem:
        return f"from: {problem}"
    known = sorted(peers)
    if origin in known or origin == local_site:
        return None
    listed = ", ".join([f"{local_site} (this site)", *known])
    return f"from: unknown site {origin!r}; known sites: {listed}"


async def _explain_from(
    router: Router, origin: str, request: Request, caller_id: SpiffeId | None
) -> Any:
    """The trace of ``request`` entering at peer site ``origin``, asked of its gateway."""
    problem = unknown_site(origin, router.local_site, router.peer_sites or ())
    if problem:
        return Reply(400, {"error": problem})
    conn = router.outbound(origin)
    if conn is None:
        why = f"site {origin} cannot be asked: the link to it is down"
        return Reply(503, {"error": why, "site": origin})
    now = router.clock()
    ctx = CallContext(
        caller_site=router.local_site, caller_id=caller_id, deadline=now + FROM_TIMEOUT_S
    )
    try:
        trace = await ask_from(
            conn, origin, request, ctx, local_site=router.local_site, clock=router.clock
        )
    except ExplainFromError as exc:
        return Reply(exc.http_status, {"error": str(exc), "site": origin})
    return {**trace, "computed_by": origin, "asked_through": router.local_site}
