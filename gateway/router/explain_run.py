"""``isthmus explain``'s Trio adapter: probe each candidate site, then :func:`explain`.

What it does, in the router's order (:func:`gateway.router.decide.resolve` first, shared with
``forward``): the local site is asked for its balancer's *preview* (nothing moves, nothing is
counted); a peer with no live link is skipped at once, as the walk does; a peer with a link
is asked over it (:func:`ask_peer`: one small stream marked ``isthmus-explain``, answered by
the peer's east-west inbound, :mod:`gateway.inbound.explain_answer`).  Probing stops at the
first site that takes the request (:func:`~gateway.router.explain.site_takes`).  Nothing of
the request is ever sent to an endpoint.

Bounds: a peer has ``ask_timeout`` seconds to answer (then the trace says it did not: never a
hang), its answer is read up to :data:`~gateway.inbound.explain_answer.MAX_ANSWER_BYTES`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import trio

from foundation.errors import IsthmusError
from gateway.cluster.errors import SiteDidNoWork
from gateway.cluster.local import LocalCluster
from gateway.cluster.peer import tunnel_request_headers
from gateway.config.model import LimitsConfig
from gateway.http.exchange import CallContext, Request
from gateway.http.overlay_headers import EXPLAIN_HEADER
from gateway.inbound.explain_answer import EXPLAIN_VERSION, MAX_ANSWER_BYTES
from gateway.router.decide import resolve
from gateway.router.explain import (
    EndpointPick,
    Limit,
    SiteProbe,
    Trace,
    explain,
    link_down,
    refused,
    site_takes,
)
from gateway.router.route import Router
from overlay.h2.stream import TunnelError
from overlay.peering.pool import StreamOpener

#: How long a peer has to answer the question (bounded again by the caller's deadline).
ASK_TIMEOUT_S = 5.0


def limits_of(limits: LimitsConfig, connect_timeout: float) -> tuple[Limit, ...]:
    """The bounds a request runs under at this gateway (``[limits]``), for the trace."""
    duration = limits.max_stream_duration_s
    return (
        Limit("route_timeout_s", f"{limits.route_timeout_s:g}"),
        Limit("stream_idle_timeout_s", f"{limits.stream_idle_timeout_s:g}"),
        Limit("max_stream_duration_s", "none" if duration is None else f"{duration:g}"),
        Limit("connect_timeout_s", f"{connect_timeout:g}"),
        Limit("link_caller_max_streams", str(limits.link_caller_max_streams)),
        Limit("link_caller_wait_s", f"{limits.link_caller_wait_s:g}"),
        Limit("max_header_bytes", str(limits.max_header_bytes)),
    )


def local_probe(cluster: LocalCluster, site: str, request: Request, service: Any) -> SiteProbe:
    """The local site: its balancer's preview (the policy never stops a caller of this site)."""
    try:
        order = cluster.preview(service, request=request)
    except IsthmusError as exc:
        fails_over = isinstance(exc, SiteDidNoWork) and exc.retry_elsewhere
        return SiteProbe(site, "local", exc.http_status, str(exc), fails_over, "allowed")
    ep = order[0]
    pick = EndpointPick(ep.address, ep.port, ep.protocol, cluster.balancer_kind(service))
    return SiteProbe(site, "local", 200, "", False, "allowed", pick)


def probe_from_answer(site: str, doc: Any) -> SiteProbe:
    """A peer's JSON answer as a probe (anything malformed: the peer did not say)."""
    if not isinstance(doc, dict):
        return SiteProbe(site, "up", 0, "malformed answer", answered=False)
    status, reason, policy = doc.get("status"), doc.get("reason", ""), doc.get("policy", "")
    if not isinstance(status, int) or isinstance(status, bool) or not 100 <= status <= 599:
        return SiteProbe(site, "up", 0, "malformed answer", answered=False)
    if policy not in ("allowed", "denied", "not reached"):
        policy = "unknown"
    return SiteProbe(
        site,
        "up",
        status,
        reason[:1024] if isinstance(reason, str) else "",
        doc.get("fails_over") is True,
        policy,
        EndpointPick.from_json(doc.get("endpoint")),
    )


async def ask_peer(
    conn: StreamOpener,
    site: str,
    request: Request,
    ctx: CallContext,
    *,
    local_site: str,
    clock: Callable[[], float] = trio.current_time,
    timeout: float = ASK_TIMEOUT_S,  # noqa: ASYNC109 -- one budget for the whole question
) -> SiteProbe:
    """Ask the peer behind ``conn`` what it would do with ``request`` (see the module doc)."""
    headers = (
        *tunnel_request_headers(request, ctx, local_site=local_site, now=clock()),
        (EXPLAIN_HEADER, EXPLAIN_VERSION),
    )
    with trio.move_on_after(timeout):
        try:
            stream = await conn.open_stream(headers, end_stream=True)
        except (TunnelError, trio.BrokenResourceError, trio.ClosedResourceError):
            return link_down(site)
        try:
            head = dict(await stream.response_headers())
            body = b""
            while len(body) <= MAX_ANSWER_BYTES:
                piece = await stream.receive_some(MAX_ANSWER_BYTES + 1 - len(body))
                if not piece:
                    break
                body += piece
        except TunnelError as exc:
            return SiteProbe(site, "up", 0, f"no answer: {exc}", answered=False)
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
        status = head.get(b":status", b"")
        if status != b"200":
            why = f"the peer cannot explain (HTTP {status.decode('ascii', 'replace')})"
            return SiteProbe(site, "up", 0, why, answered=False)
        if len(body) > MAX_ANSWER_BYTES:
            return SiteProbe(site, "up", 0, "answer too large", answered=False)
        try:
            return probe_from_answer(site, json.loads(body))
        except ValueError:
            return SiteProbe(site, "up", 0, "malformed answer", answered=False)
    return SiteProbe(site, "up", 0, f"no answer within {timeout:g}s", answered=False)


async def run_explain(
    router: Router,
    cluster: LocalCluster,
    request: Request,
    ctx: CallContext,
    *,
    limits: tuple[Limit, ...] = (),
    ask_timeout: float = ASK_TIMEOUT_S,
) -> Trace:
    """The trace of ``request`` as ``router`` would route it now (nothing is sent)."""
    route = route_of(router, request, ctx)
    if route is not None:
        label, answer, request = route
        if answer is not None:
            status, why = answer
            return dataclasses.replace(refused(request.authority, status, why, limits), route=label)
    else:
        label = None
    try:
        found = resolve(
            request.authority,
            mesh_domain=router.mesh_domain,
            local_site=router.local_site,
            peer_sites=router.peer_sites,
            view=router.routes.latest,
            known=router.known,
        )
    except IsthmusError as exc:
        trace = refused(request.authority, exc.http_status, str(exc), limits)
        return dataclasses.replace(trace, route=label)
    probes: dict[str, SiteProbe] = {}
    for site in found.sites:
        if site == router.local_site:
            probe = local_probe(cluster, site, request, found.address.service_name)
        else:
            conn = router.outbound(site)
            if conn is None:
                probe = link_down(site)
            else:
                probe = await ask_peer(
                    conn,
                    site,
                    request,
                    ctx,
                    local_site=router.local_site,
                    clock=router.clock,
                    timeout=ask_timeout,
                )
        probes[site] = probe
        if site_takes(probe):
            break
    for site in found.sites:  # the sites not reached: their link state only, nothing asked
        if site not in probes:
            up = site == router.local_site or router.outbound(site) is not None
            local = site == router.local_site
            probes[site] = SiteProbe(site, "local" if local else ("up" if up else "down"))
    return explain(request.authority, found, probes, limits=limits, route=label)


def route_of(
    router: Router, request: Request, ctx: CallContext
) -> tuple[str, tuple[int, str] | None, Request] | None:
    """The ``[[routes]]`` entry that takes ``request`` (None: no route, the default walk).

    Returns its label, the answer the gateway itself would give (a direct response or an
    injected abort for every request: nothing is forwarded) or None, and the request the walk
    goes on with: the heaviest backend's address (a split names every backend and weight).
    Pure: no token is taken from a rate limit, no draw is made.
    """
    rules = router.rules
    if rules is None:
        return None
    route = rules.decide(request, ctx)
    if route is None:
        return None
    config = route.config
    label = route.label
    extras = []
    if config.rate_limit is not None:
        extras.append("rate limited")
    fault = config.fault
    if fault is not None:
        extras.append(f"faults for {fault.percent:g} %")
    if config.direct_response is not None:
        why = f"route {label} answers itself (direct_response {config.direct_response.status})"
        return label, (config.direct_response.status, why), request
    aborts = fault is not None and fault.percent >= 100 and fault.header is None
    if aborts and fault is not None and fault.abort_status is not None:
        why = f"route {label} injects {fault.abort_status} into every request"
        return label, (fault.abort_status, why), request
    if route.hosts:
        weights = [
            b - a for a, b in zip((0, *route.cumulative[:-1]), route.cumulative, strict=True)
        ]
        total = route.cumulative[-1]
        heaviest = max(range(len(weights)), key=weights.__getitem__)
        split = ", ".join(
            f"{host.decode()} {w}/{total}" for host, w in zip(route.hosts, weights, strict=True)
        )
        label = f"{label} (backends {split}; explained: the heaviest)"
        request = dataclasses.replace(request, authority=route.hosts[heaviest])
    if extras:
        label = f"{label}; {', '.join(extras)}"
    return label, None, request
