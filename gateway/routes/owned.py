"""The routes a site owns, as it exports them to its peers (pure).

A site's ``[[routes]]`` for an address it exports travel with the export of that service
(federation version 2, :mod:`overlay.federation.export_routes`), so that a caller entering at
another site follows the owner's split (docs/routes.md, "Where routes apply").  Each route
travels as one string: the route's own TOML keys as compact JSON (defaults left out), which
the importer decodes with the same loader as a local ``[[routes]]`` table
(:mod:`gateway.routes.imported`).  A string, not a nested object, so that the federation layer
compares, sizes and stores routes without knowing what they mean.

Which routes: those whose address is the service's any-site form (``api.payments``) or the
form pinned to this site (``api.payments.<this site>``); the export of the service then
decides which peers see them -- ``[[exports]]`` per peer -- so a route never reaches a peer
that may not see its address.  A route for an address that is no exported service (a new
name for a backend) stays local.

Limits, so that one service's routes always fit in a federation frame: at most
:data:`MAX_ROUTES_PER_SERVICE` routes of at most :data:`MAX_ROUTE_TEXT_BYTES` each and
:data:`MAX_SERVICE_ROUTE_BYTES` in all per service.  A service over them exports none of its
routes -- whole or nothing, as an importer with some of them would take requests elsewhere
than the owner does -- and is named in the problems returned (the gateway logs them).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from discovery.model import ServiceName
from foundation.spiffe_id import SpiffeId
from gateway.config.routes import RouteConfig
from gateway.routes.table import address_key

MAX_ROUTES_PER_SERVICE = 256
MAX_ROUTE_TEXT_BYTES = 80 * 1024  # a 64 KiB direct response body and the rest
MAX_SERVICE_ROUTE_BYTES = 1024 * 1024


def _default(f: dataclasses.Field[Any]) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def plain(value: Any) -> Any:
    """``value`` as the TOML data that decodes to it (a dataclass's defaults left out)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            if item == _default(f):
                continue
            out[f.name] = plain(item)
        return out
    if isinstance(value, tuple):
        return [plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, SpiffeId):
        return str(value)
    return value


def route_text(route: RouteConfig, label: str) -> str:
    """The wire form of ``route``; ``label`` (its name, else ``routes[i]``) becomes its name."""
    data = plain(dataclasses.replace(route, name=label))
    return json.dumps(data, separators=(",", ":"), ensure_ascii=True)


def owned_route_texts(
    routes: tuple[RouteConfig, ...], local_site: str
) -> tuple[dict[ServiceName, tuple[str, ...]], list[str]]:
    """Service -> the texts of its exportable routes (config order), and the services whose
    routes stay local for the limits (as log lines).  A service's routes go whole or not at
    all: an importer with only some of them would send requests where the owner does not."""
    texts: dict[ServiceName, list[str]] = {}
    for i, route in enumerate(routes):
        service, namespace, site = address_key(route.address)
        if site is not None and site != local_site:
            continue  # pinned to another site: that site's address, not ours
        text = route_text(route, route.name or f"routes[{i}]")
        texts.setdefault(ServiceName(service, namespace), []).append(text)
    out: dict[ServiceName, tuple[str, ...]] = {}
    problems: list[str] = []
    for name, items in texts.items():
        biggest = max(len(t) for t in items)
        if len(items) > MAX_ROUTES_PER_SERVICE:
            problems.append(f"{name}: {len(items)} routes (over {MAX_ROUTES_PER_SERVICE})")
        elif biggest > MAX_ROUTE_TEXT_BYTES:
            problems.append(f"{name}: a route of {biggest} bytes (over {MAX_ROUTE_TEXT_BYTES})")
        elif sum(len(t) for t in items) > MAX_SERVICE_ROUTE_BYTES:
            problems.append(f"{name}: over {MAX_SERVICE_ROUTE_BYTES} bytes of routes")
        else:
            out[name] = tuple(items)
    return out, problems
