"""Admin views: JSON renderings of the gateway's live state (imports, routes)."""

from __future__ import annotations

from typing import Any

from overlay.federation.import_ import ImportTable
from overlay.peering.route_table import RouteView


def _secs(seconds: float) -> float:
    return round(seconds, 3)


def imports_json(table: ImportTable, now: float) -> dict[str, Any]:
    """Every peer's imported services with origin, version and freshness."""
    peers = []
    for site in sorted(table.peers.keys()):
        peer = table.peers[site]
        expires = table.expires_at(site)
        services = []
        for name in sorted(peer.services.keys()):
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
    routes = {
        f"{name.name}.{name.namespace}.{mesh_domain}": list(view.routes[name])
        for name in sorted(view.routes.keys())
    }
    return {"local_site": view.local_site, "routes": routes}
