"""Admin views: JSON renderings of the gateway's live state (imports, routes).

Each is a resumable computation (``*_steps``, see :mod:`gateway.admin.sliced`) over one frozen
snapshot, yielding after every ``slice_rows`` rows, so the admin server can render a peer's 10k
services without stalling the loop; the plain functions run one in a go.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from discovery.steps import UNSLICED, Steps, check_slice, complete
from gateway.admin.sliced import ROWS_SLICE
from overlay.federation.import_ import ImportTable
from overlay.peering.route_table import RouteView


def _secs(seconds: float) -> float:
    return round(seconds, 3)


def imports_json(table: ImportTable, now: float) -> dict[str, Any]:
    """Every peer's imported services with origin, version and freshness."""
    return complete(imports_json_steps(table, now, slice_rows=UNSLICED))


def imports_json_steps(
    table: ImportTable, now: float, *, slice_rows: int = ROWS_SLICE
) -> Steps[dict[str, Any]]:
    """:func:`imports_json`, yielding after every ``slice_rows`` services."""
    check_slice(slice_rows)
    peers = []
    pending = 0
    for site in sorted(table.peers.keys()):
        peer = table.peers[site]
        expires = table.expires_at(site)
        services = []
        for name in sorted(peer.services.keys()):
            if pending >= slice_rows:
                yield pending
                pending = 0
            pending += 1
            imported = peer.services[name]
            svc = imported.service
            services.append(
                {
                    "service": svc.service.name,
                    "namespace": svc.service.namespace,
                    "protocols": list(svc.protocols),
                    "healthy": svc.healthy_count,
                    "total": svc.total_count,
                    "capacity": svc.capacity,
                    "spiffe_ids": [str(i) for i in svc.spiffe_ids],
                    "version": imported.version,
                }
            )
        peers.append(
            {
                "site": site,
                "epoch": peer.epoch,
                "version": peer.version,
                "stale": peer.stale,
                "confirmed_age_s": _secs(now - peer.confirmed_at),
                "withdraw_in_s": None if expires is None else _secs(expires - now),
                "services": services,
            }
        )
    return {"grace_s": table.grace, "peers": peers}


def routes_json(view: RouteView, mesh_domain: str) -> dict[str, Any]:
    """For each L7 address (any-site form), the sites that can serve it in failover order."""
    return complete(routes_json_steps(view, mesh_domain, slice_rows=UNSLICED))


def routes_json_steps(
    view: RouteView,
    mesh_domain: str,
    *,
    slice_rows: int = ROWS_SLICE,
    extra: Mapping[str, Any] | None = None,
) -> Steps[dict[str, Any]]:
    """:func:`routes_json`, yielding after every ``slice_rows`` routes; ``extra``: more
    top-level fields, taken when the request came (the routes followed from owners)."""
    check_slice(slice_rows)
    routes: dict[str, list[str]] = {}
    pending = 0
    for name in sorted(view.routes.keys()):
        if pending >= slice_rows:
            yield pending
            pending = 0
        pending += 1
        routes[f"{name.name}.{name.namespace}.{mesh_domain}"] = list(view.routes[name])
    return {"local_site": view.local_site, "routes": routes, **(extra or {})}
