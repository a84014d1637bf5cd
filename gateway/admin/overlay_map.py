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

Bounded whatever the catalog or the config holds, in size and in work: at most
:data:`MAX_SITES` nodes, :data:`MAX_SERVICES_PER_SITE` services per node (the first by
namespace and name) and :data:`MAX_SERVICE_ROWS` in all (the rest are counted in
``more_services`` / ``more_sites``), error texts cut to :data:`MAX_TEXT`; the health and
export checks of local services do at most :data:`MAX_ENDPOINTS_CHECKED` endpoint checks per
document (past that a service's ``healthy`` and ``exported_to`` are None: unknown).  The
costly parts (:func:`local_part`, :func:`imported_part`) depend only on the catalog, the
export rules and the import table, which are immutable snapshots, so the adapter reuses them
until one of those changes (see :mod:`gateway.admin.overlay_view`).  Names are passed as they
are: escaping them is the page's job (it only ever sets ``textContent``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from heapq import nsmallest
from typing import Any

from discovery.model import ServiceName
from discovery.snapshot import Catalog
from discovery.steps import SLICE_ITEMS, UNSLICED, Steps, check_slice
from discovery.steps import complete as run_to_end
from gateway.admin.traffic import FROM_PEERS, TrafficRate
from overlay.federation.config import ExportConfig
from overlay.federation.export import consents
from overlay.federation.import_ import ImportTable, PeerImports

__all__ = [
    "MAX_ENDPOINTS_CHECKED",
    "MAX_SERVICES_PER_SITE",
    "MAX_SERVICE_ROWS",
    "MAX_SITES",
    "MAX_TEXT",
    "ImportedPart",
    "LocalPart",
    "imported_part",
    "local_part",
    "overlay_json",
]

MAX_SITES = 64
MAX_SERVICES_PER_SITE = 100
MAX_SERVICE_ROWS = 1000
MAX_ENDPOINTS_CHECKED = 20_000
MAX_TEXT = 200

Rates = Mapping[str, TrafficRate | None]


def _text(value: object) -> str | None:
    if value is None:
        return None
    text = str(value)
    return text if len(text) <= MAX_TEXT else text[: MAX_TEXT - 1] + "…"


def _service_state(healthy: int | None, total: int) -> str | None:
    if healthy is None:
        return None
    if healthy <= 0:
        return "down"
    return "up" if healthy >= total else "degraded"


def _rate(rates: Rates | None, key: str) -> dict[str, float] | None:
    if rates is None:
        return None
    rate = rates.get(key)
    return None if rate is None else rate.json()


def _first(names: Iterable[ServiceName]) -> list[ServiceName]:
    """The first services by namespace and name, without sorting them all (tuples of str
    compare in C; the dataclasses' own ordering is far slower)."""
    return nsmallest(MAX_SERVICES_PER_SITE, names, key=lambda n: (n.namespace, n.name))


@dataclass(frozen=True, slots=True)
class LocalPart:
    """This site's services as the page shows them (the costly part of a local node)."""

    services: tuple[dict[str, Any], ...]
    total_services: int
    not_healthy: int  # among the services shown
    stale_sources: tuple[str, ...]


def local_part(
    catalog: Catalog, rules: Sequence[ExportConfig], peers: Sequence[str], now: float
) -> LocalPart:
    """Health and exports of the first :data:`MAX_SERVICES_PER_SITE` local services.

    The work is bounded by :data:`MAX_ENDPOINTS_CHECKED`: each endpoint looked at costs one,
    plus one per peer whose consent is still to be checked.  A service reached when the budget
    is spent is listed with its total only (``healthy`` and ``exported_to`` None: unknown)."""
    return run_to_end(local_part_steps(catalog, rules, peers, now, slice_units=UNSLICED))


def local_part_steps(
    catalog: Catalog,
    rules: Sequence[ExportConfig],
    peers: Sequence[str],
    now: float,
    *,
    slice_units: int = SLICE_ITEMS,
) -> Steps[LocalPart]:
    """:func:`local_part`, yielding after every ``slice_units`` of its budget (the whole
    budget is ~20-40 ms of CPU: the admin server runs it a slice per loop step)."""
    check_slice(slice_units)
    budget = MAX_ENDPOINTS_CHECKED
    services: list[dict[str, Any]] = []
    not_healthy = 0
    pending = 0
    for name in _first(catalog.services.keys()):
        entries = catalog.services[name]
        total = len(entries)
        count, stale, consented, complete = 0, True, set[str](), True
        wanted = list(peers) if rules else []
        for entry in entries.values():
            if budget <= 0:  # out of work: unknown rather than wrong
                complete = stale = False
                break
            if pending >= slice_units:
                yield pending
                pending = 0
            pending += 1 + len(wanted)
            budget -= 1 + len(wanted)
            count += catalog.is_routable(entry, now)
            stale = stale and catalog.is_stale(entry)
            if wanted:
                consented.update(p for p in wanted if consents(rules, entry.endpoint, p))
                wanted = [p for p in wanted if p not in consented]
        healthy = count if complete else None
        exported = [p for p in peers if p in consented] if complete else None
        state = _service_state(healthy, total)
        not_healthy += state in ("down", "degraded")
        services.append(
            {
                "service": name.name,
                "namespace": name.namespace,
                "healthy": healthy,
                "total": total,
                "state": state,
                "stale": stale,
                "exported_to": exported,
            }
        )
    stale_sources = tuple(sorted(s.name for s in catalog.sources.values() if s.stale))
    return LocalPart(tuple(services), len(catalog.services), not_healthy, stale_sources)


@dataclass(frozen=True, slots=True)
class ImportedPart:
    """A peer's imported services as the page shows them."""

    services: tuple[dict[str, Any], ...]
    total_services: int
    not_healthy: int  # among the services shown


def imported_part(peer: PeerImports) -> ImportedPart:
    services: list[dict[str, Any]] = []
    not_healthy = 0
    for name in _first(peer.services.keys()):
        svc = peer.services[name].service
        state = _service_state(svc.healthy_count, svc.total_count)
        not_healthy += state != "up"
        services.append(
            {
                "service": name.name,
                "namespace": name.namespace,
                "healthy": svc.healthy_count,
                "total": svc.total_count,
                "state": state,
                "stale": False,  # set per document: staleness comes and goes with the link
                "exported_to": None,  # the peer's rules: not this site's to know
            }
        )
    return ImportedPart(tuple(services), len(peer.services), not_healthy)


def _local_node(site: str, part: LocalPart, rates: Rates | None) -> dict[str, Any]:
    reasons = [f"source {name} stale" for name in part.stale_sources[:8]]
    if part.not_healthy:
        shown = len(part.services)
        reasons.append(f"{part.not_healthy} of {shown} services not fully healthy")
    return {
        "site": site,
        "local": True,
        "state": "degraded" if reasons else "up",
        "reasons": [_text(r) for r in reasons],
        "services": list(part.services),
        "more_services": part.total_services - len(part.services),
        "traffic": {"local": _rate(rates, site), "from_peers": _rate(rates, FROM_PEERS)},
    }


def _peer_node(
    site: str,
    link: Mapping[str, Any] | None,
    imports: ImportTable,
    part: ImportedPart | None,
    now: float,
) -> dict[str, Any]:
    link_up = bool(link and link.get("up"))
    peer = imports.peers.get(site)
    stale = peer is not None and peer.stale
    reasons: list[str] = []
    if not link_up:
        reasons.append("link down")
    # A site of several gateways (docs/replicas.md) is up while any is; fewer is degraded.
    replicas: list[Mapping[str, Any]] = [] if link is None else list(link.get("replicas", ()))
    replicas_up = sum(1 for r in replicas if r.get("up"))
    missing = link_up and replicas_up < len(replicas)
    if missing:
        reasons.append(f"{replicas_up} of {len(replicas)} replicas up")
    if part is None:
        if link_up:
            reasons.append("no catalog imported yet")
    else:
        if stale:
            expires = imports.expires_at(site)
            left = None if expires is None else max(expires - now, 0.0)
            reasons.append(
                "imports stale" + ("" if left is None else f", withdrawn in {left:.0f} s")
            )
        if part.not_healthy:
            shown = len(part.services)
            reasons.append(f"{part.not_healthy} of {shown} services not fully healthy")
    if not link_up:
        state = "down"
    elif stale or missing or (part is not None and part.not_healthy):
        state = "degraded"
    else:
        state = "up"
    services = [] if part is None else list(part.services)
    if stale:
        services = [svc | {"stale": True} for svc in services]
    return {
        "site": site,
        "local": False,
        "state": state,
        "reasons": [_text(r) for r in reasons],
        "services": services,
        "more_services": 0 if part is None else part.total_services - len(part.services),
        "traffic": None,
        "replicas": {"up": replicas_up, "total": len(replicas)},
    }


def _edge(local: str, site: str, link: Mapping[str, Any] | None, rates: Rates | None) -> Any:
    link = link or {}
    rtt = link.get("ping_rtt_s")
    kinds = (("dialed", "dialed_link"), ("accepted", "accepted_link"))
    return {
        "from": local,
        "to": site,
        "state": "up" if link.get("up") else "down",
        "rtt_ms": None if rtt is None or not link.get("up") else round(float(rtt) * 1000, 3),
        "up_for_s": link.get("up_for_s"),
        "links": [d for d, key in kinds if link.get(key)],
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
    local: LocalPart | None = None,
    imported: Mapping[str, ImportedPart] | None = None,
) -> dict[str, Any]:
    """The ``/overlay`` document (see the module docstring).

    ``links`` is the peering's per-peer status (``/links``); ``rates`` the recent traffic per
    destination site and :data:`~gateway.admin.traffic.FROM_PEERS`, or None when metrics are
    off (the page then says so instead of showing zero).  ``local`` and ``imported`` are the
    costly parts when the caller kept them from an earlier document of the same snapshots;
    computed here when not given.
    """
    known = sorted(set(links) | set(imports.peers.keys()))
    shown = [s for s in known if s != local_site][: MAX_SITES - 1]
    if local is None:
        local = local_part(catalog, export_rules, sorted(links), now)
    if imported is None:
        imported = {s: imported_part(imports.peers[s]) for s in shown if s in imports.peers}
    nodes = [_local_node(local_site, local, rates)]
    nodes += [_peer_node(site, links.get(site), imports, imported.get(site), now) for site in shown]
    room = MAX_SERVICE_ROWS  # in all: this site's services first, then the peers' by name
    for node in nodes:
        services = node["services"]
        node["services"] = services[:room]
        node["more_services"] += len(services) - len(node["services"])
        room -= len(node["services"])
    edges = [_edge(local_site, site, links.get(site), rates) for site in shown if site in links]
    return {
        "site": local_site,
        "nodes": nodes,
        "edges": edges,
        "more_sites": len(known) - len(shown) - (local_site in known),
        "metrics": rates is not None,
        "traffic_window_s": window_s,
    }
