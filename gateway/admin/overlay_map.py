"""``GET /overlay``: the overlay as this gateway sees it, for the map page (pure, no I/O).

One document with everything the page draws, so the page makes one request per refresh and
never joins views itself: the **nodes** (this site and every configured peer, each with a
state and the reasons for it, and its services with healthy/total), the **edges** (this
site's link to each peer: up or down, PING round trip, failed attempts, last error, recent
traffic) and the recent **traffic** of this site.

States are words, not colours, so the page can show them as text (and a screen reader read
them):

* a peer is ``down`` when no link to it is up; ``degraded`` when the link is up but its
  imports are stale (the federation stream ended) or some of its services are not fully
  healthy; else ``up``;
* this site is ``degraded`` when a discovery source is stale or a local service is not fully
  healthy; else ``up`` (it answered, after all);
* a service is ``down`` (no healthy endpoint), ``degraded`` (some) or ``up`` (all), and
  ``stale`` when no live source or link vouches for it now.

Bounded whatever the catalog or the config holds: at most :data:`MAX_SITES` nodes and
:data:`MAX_SERVICES_PER_SITE` services per node (the rest are counted in ``more_services`` /
``more_sites``), error texts cut to :data:`MAX_TEXT`, and the export check of a local service
looks at no more than :data:`MAX_ENDPOINTS_CHECKED` endpoints in all.  Names are passed as
they are: escaping them is the page's job (it only ever sets ``textContent``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from discovery.model import ServiceName
from discovery.snapshot import Catalog
from gateway.admin.traffic import FROM_PEERS, TrafficRate
from overlay.federation.config import ExportConfig
from overlay.federation.export import consents
from overlay.federation.import_ import ImportTable

__all__ = [
    "MAX_ENDPOINTS_CHECKED",
    "MAX_SERVICES_PER_SITE",
    "MAX_SITES",
    "MAX_TEXT",
    "overlay_json",
]

MAX_SITES = 64
MAX_SERVICES_PER_SITE = 100
MAX_ENDPOINTS_CHECKED = 20_000
MAX_TEXT = 200

Rates = Mapping[str, TrafficRate | None]


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _service_state(healthy: int, total: int) -> str:
    if healthy <= 0:
        return "down"
    return "up" if healthy >= total else "degraded"


def _rate(rates: Rates | None, key: str) -> dict[str, float] | None:
    if rates is None:
        return None
    rate = rates.get(key)
    return None if rate is None else rate.json()


class _Budget:
    """How many more endpoints the export check may look at in this document."""

    def __init__(self, endpoints: int) -> None:
        self.left = endpoints


def _exported_to(
    catalog: Catalog,
    service: ServiceName,
    rules: Sequence[ExportConfig],
    peers: Sequence[str],
    budget: _Budget,
) -> list[str] | None:
    """The peers some rule lets see ``service`` (None when the budget ran out: unknown)."""
    if not rules:
        return []
    out: list[str] = []
    for peer in peers:
        for entry in catalog.endpoints(service):
            if budget.left <= 0:
                return None
            budget.left -= 1
            if consents(rules, entry.endpoint, peer):
                out.append(peer)
                break
    return out


def _local_node(
    site: str,
    catalog: Catalog,
    rules: Sequence[ExportConfig],
    peers: Sequence[str],
    now: float,
    rates: Rates | None,
) -> dict[str, Any]:
    budget = _Budget(MAX_ENDPOINTS_CHECKED)
    services: list[dict[str, Any]] = []
    names = catalog.service_names()
    not_healthy = 0
    for name in names:
        entries = catalog.endpoints(name)
        healthy = sum(1 for e in entries if catalog.is_routable(e, now))
        state = _service_state(healthy, len(entries))
        not_healthy += state != "up"
        if len(services) >= MAX_SERVICES_PER_SITE:
            continue
        services.append(
            {
                "service": name.name,
                "namespace": name.namespace,
                "healthy": healthy,
                "total": len(entries),
                "state": state,
                "stale": bool(entries) and all(catalog.is_stale(e) for e in entries),
                "exported_to": _exported_to(catalog, name, rules, peers, budget),
            }
        )
    reasons = [f"source {s.name} stale" for s in catalog.sources.values() if s.stale]
    if not_healthy:
        reasons.append(f"{not_healthy} of {len(names)} services not fully healthy")
    return {
        "site": site,
        "local": True,
        "state": "degraded" if reasons else "up",
        "reasons": [_text(r) for r in reasons[:8]],
        "services": services,
        "more_services": max(len(names) - MAX_SERVICES_PER_SITE, 0),
        "traffic": {"local": _rate(rates, site), "from_peers": _rate(rates, FROM_PEERS)},
    }


def _peer_node(
    site: str, link: Mapping[str, Any] | None, imports: ImportTable, now: float
) -> dict[str, Any]:
    link_up = bool(link and link.get("up"))
    peer = imports.peers.get(site)
    reasons: list[str] = []
    services: list[dict[str, Any]] = []
    total_services = not_healthy = 0
    stale = peer is not None and peer.stale
    if not link_up:
        reasons.append("link down")
    if peer is None:
        if link_up:
            reasons.append("no catalog imported yet")
    else:
        total_services = len(peer.services)
        for name in sorted(peer.services.keys()):
            svc = peer.services[name].service
            state = _service_state(svc.healthy_count, svc.total_count)
            not_healthy += state != "up"
            if len(services) < MAX_SERVICES_PER_SITE:
                services.append(
                    {
                        "service": name.name,
                        "namespace": name.namespace,
                        "healthy": svc.healthy_count,
                        "total": svc.total_count,
                        "state": state,
                        "stale": stale,
                        "exported_to": None,  # the peer's rules: not this site's to know
                    }
                )
        if stale:
            expires = imports.expires_at(site)
            left = None if expires is None else max(expires - now, 0.0)
            reasons.append(
                "imports stale" + ("" if left is None else f", withdrawn in {left:.0f} s")
            )
        if not_healthy:
            reasons.append(f"{not_healthy} of {total_services} services not fully healthy")
    if not link_up:
        state = "down"
    elif stale or not_healthy:
        state = "degraded"
    else:
        state = "up"
    return {
        "site": site,
        "local": False,
        "state": state,
        "reasons": [_text(r) for r in reasons],
        "services": services,
        "more_services": max(total_services - MAX_SERVICES_PER_SITE, 0),
        "traffic": None,
    }


def _edge(local: str, site: str, link: Mapping[str, Any] | None, rates: Rates | None) -> Any:
    link = link or {}
    rtt = link.get("ping_rtt_s")
    kinds = (("dialed", "dialed_link"), ("accepted", "accepted_link"))
    directions = [d for d, key in kinds if link.get(key)]
    return {
        "from": local,
        "to": site,
        "state": "up" if link.get("up") else "down",
        "rtt_ms": None if rtt is None or not link.get("up") else round(float(rtt) * 1000, 3),
        "up_for_s": link.get("up_for_s"),
        "links": directions,
        "failed_attempts": int(link.get("failed_attempts") or 0),
        "links_established": int(link.get("links_established") or 0),
        "last_error": _text(link.get("last_error")),
        "traffic": _rate(rates, site),
    }


def overlay_json(
    *,
    local_site: str,
    links: Mapping[str, Mapping[str, Any]],
    imports: ImportTable,
    catalog: Catalog,
    export_rules: Sequence[ExportConfig],
    now: float,
    rates: Rates | None,
    window_s: float | None = None,
) -> dict[str, Any]:
    """The ``/overlay`` document (see the module docstring).

    ``links`` is the peering's per-peer status (``/links``); ``rates`` the recent traffic per
    destination site and :data:`~gateway.admin.traffic.FROM_PEERS`, or None when metrics are
    off (the page then says so instead of showing zero).
    """
    known = sorted(set(links) | set(imports.peers.keys()))
    shown = [s for s in known if s != local_site][: MAX_SITES - 1]
    nodes = [_local_node(local_site, catalog, export_rules, sorted(links), now, rates)]
    nodes += [_peer_node(site, links.get(site), imports, now) for site in shown]
    edges = [_edge(local_site, site, links.get(site), rates) for site in shown if site in links]
    return {
        "site": local_site,
        "nodes": nodes,
        "edges": edges,
        "more_sites": max(len(known) - len(shown) - (local_site in known), 0),
        "metrics": rates is not None,
        "traffic_window_s": window_s,
    }
