"""Routes imported from the sites that own their addresses: validated, chosen (pure, no trio).

Theory of operation
-------------------
An owner site attaches its routes to the services it exports (:mod:`gateway.routes.owned`).
This module turns what the peers sent -- the import table's services with their route texts --
into the routes this gateway applies, by three rules (docs/routes.md, "Where routes apply"):

1. **Untrusted input, validated like local config.**  Each text is decoded by the same loader
   and validators as a local ``[[routes]]`` table (bounded regex engine, header edits that
   cannot touch ``isthmus-*`` or connection fields, weights, sizes...), then checked against
   what the peer may speak for: the address must be the exported service's, in its any-site
   form or pinned to the peer itself; a backend or mirror pinned to a site must name this site
   or one of its peers; its name (a log field and a metrics label here) must be short
   printable ASCII.  Limits per peer: :data:`MAX_ROUTE_TEXT_BYTES` per route,
   :data:`MAX_IMPORTED_ROUTES_PER_PEER` routes and :data:`MAX_IMPORTED_ROUTE_BYTES_PER_PEER`
   bytes of them.  A service's routes from one site are taken whole or not at all: without
   one of them the others would take requests it should have (first match wins), so a bad
   route costs its service's routes from that site (reported with the reason), and the
   peer's other services and their routes stay.
2. **Local wins.**  An address with any local route (the operator's config, or the fleet
   document's) takes none from peers.
3. **One owner per address.**  When several sites send routes for one address, the first in
   this site's failover order -- peer priority, then name, as
   :func:`overlay.peering.route_table.ordered_peers` orders them -- is followed, and the
   address is reported as a conflict when another site's routes differ.  A site that exports
   the service without routes for the address has no say.  The order does not depend on link
   health, so a flapping link does not flip the split.

Decoding a route is the expensive part; :class:`RouteDecoder` remembers the verdict per text,
so a delta that changes one service's health does not decode anything again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

from discovery.model import ServiceName
from gateway.config.decode import Decoder
from gateway.config.routes import RouteConfig, route_site_problems
from gateway.routes.owned import MAX_ROUTE_TEXT_BYTES
from gateway.routes.table import AddressKey, address_key
from overlay.federation.import_ import ImportTable

MAX_IMPORTED_ROUTES_PER_PEER = 4096
MAX_IMPORTED_ROUTE_BYTES_PER_PEER = 16 * 1024 * 1024
MAX_NAME_CHARS = 128  # an imported route's name becomes a log field and a metrics label
DEFAULT_PRIORITY = 100

#: Per peer site: service -> its route texts (only services that carry routes).
PeerRoutes = Mapping[ServiceName, tuple[str, ...]]


@dataclass(frozen=True, slots=True)
class Rejected:
    """An imported route this gateway refused, and why (for the log and ``/routes``)."""

    site: str
    service: ServiceName
    position: int  # its place in the service's routes, from 0
    reason: str


@dataclass(frozen=True, slots=True)
class ImportedRoutes:
    """What the peers' routes come to at this gateway."""

    #: Address -> the routes followed for it (labelled ``<site>/<label>``), config order.
    routes: Mapping[AddressKey, tuple[RouteConfig, ...]]
    #: Address -> the site whose routes are followed.
    origin: Mapping[AddressKey, str]
    #: Address -> the other sites whose routes for it differ (not followed).
    conflicts: Mapping[AddressKey, tuple[str, ...]]
    #: Addresses a peer sent routes for that a local route overrides.
    shadowed: frozenset[AddressKey]
    rejected: tuple[Rejected, ...]

    def __len__(self) -> int:
        return sum(len(r) for r in self.routes.values())


NO_IMPORTED_ROUTES = ImportedRoutes({}, {}, {}, frozenset(), ())


def peer_routes(table: ImportTable) -> dict[str, PeerRoutes]:
    """Each peer's services that carry routes (kept by the import table itself)."""
    return {site: peer.routes for site, peer in table.peers.items() if peer.routes}


def _refuse_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


def _has_null(data: object) -> bool:
    if data is None:
        return True
    if isinstance(data, list):
        return any(_has_null(v) for v in data)
    if isinstance(data, dict):
        return any(_has_null(v) for v in data.values())
    return False


class RouteDecoder:
    """Decodes and checks imported route texts, remembering each verdict.

    The verdict depends on the text, the peer and the service it came with, and this site's
    name and peers (:meth:`reset` when those change).
    """

    def __init__(self, local_site: str, peers: Iterable[str]) -> None:
        self.local_site = local_site
        self.peers = frozenset(peers)
        self._seen: dict[tuple[str, ServiceName, str], RouteConfig | str] = {}

    def reset(self, local_site: str, peers: Iterable[str]) -> None:
        self.local_site, self.peers, self._seen = local_site, frozenset(peers), {}

    def keep_only(self, keys: set[tuple[str, ServiceName, str]]) -> None:
        """Forget the texts no peer sends any more (the memory stays bounded by the imports)."""
        if len(self._seen) > len(keys):
            self._seen = {k: v for k, v in self._seen.items() if k in keys}

    def decode(self, site: str, service: ServiceName, text: str) -> RouteConfig | str:
        """The route (labelled ``<site>/<label>``), or why it is refused."""
        key = (site, service, text)
        verdict = self._seen.get(key)
        if verdict is None:
            verdict = self._seen[key] = self._decode(site, service, text)
        return verdict

    def _decode(self, site: str, service: ServiceName, text: str) -> RouteConfig | str:
        if len(text) > MAX_ROUTE_TEXT_BYTES:
            return f"{len(text)} bytes, over the {MAX_ROUTE_TEXT_BYTES}-byte limit"
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
            if _has_null(data):
                return "null is not a value a route can hold (it is TOML data)"
        except (ValueError, RecursionError) as exc:
            return f"not JSON: {exc}"
        decoder = Decoder(Path("."))
        try:
            route = decoder.decode_root(RouteConfig, data)
        except Exception as exc:  # a peer's input must never take the gateway down
            return f"refused by the config loader ({type(exc).__name__})"
        if decoder.problems or route is None:
            return "; ".join(f"{p or 'route'}: {m}" for p, m in decoder.problems[:3])
        label = route.name or "route"
        if len(label) > MAX_NAME_CHARS or not all(0x20 < ord(c) < 0x7F for c in label):
            return f"name: must be at most {MAX_NAME_CHARS} printable ASCII characters"
        name, namespace, pinned = address_key(route.address)
        if (name, namespace) != (service.name, service.namespace) or pinned not in (None, site):
            return (
                f"address {route.address!r} is not {service} or {service}.{site} "
                f"(a site sends routes only for the addresses it exports)"
            )
        problems = route_site_problems((route,), self.local_site, self.peers)
        if problems:
            return problems[0][1].replace("a configured peer", "a peer of this site")
        return replace(route, name=f"{site}/{label}")


def choose_routes(
    peers: Mapping[str, PeerRoutes],
    local: frozenset[AddressKey],
    priorities: Mapping[str, int],
    decoder: RouteDecoder,
    *,
    max_per_peer: int = MAX_IMPORTED_ROUTES_PER_PEER,
    max_bytes_per_peer: int = MAX_IMPORTED_ROUTE_BYTES_PER_PEER,
) -> ImportedRoutes:
    """The routes to follow from ``peers`` (site -> service -> texts); see the module doc."""
    chosen: dict[AddressKey, tuple[RouteConfig, ...]] = {}
    texts_of: dict[AddressKey, tuple[str, ...]] = {}
    origin: dict[AddressKey, str] = {}
    conflicts: dict[AddressKey, list[str]] = {}
    shadowed: set[AddressKey] = set()
    rejected: list[Rejected] = []
    order = sorted(peers, key=lambda s: (priorities.get(s, DEFAULT_PRIORITY), s))
    seen: set[tuple[str, ServiceName, str]] = set()
    for site in order:
        if site == decoder.local_site:
            continue  # never our own routes back
        count = size = 0
        by_key: dict[AddressKey, list[tuple[str, RouteConfig]]] = {}
        services = peers[site]
        for service in sorted(services, key=str):
            texts = services[service]
            seen.update((site, service, text) for text in texts)
            weight = sum(len(text) for text in texts)
            if count + len(texts) > max_per_peer or size + weight > max_bytes_per_peer:
                reason = (
                    f"over the {max_per_peer} routes or {max_bytes_per_peer} bytes taken "
                    f"from one site; none of the service's {len(texts)} routes is followed"
                )
                rejected.append(Rejected(site, service, 0, reason))
                continue
            verdicts = [decoder.decode(site, service, text) for text in texts]
            bad = [(i, v) for i, v in enumerate(verdicts) if isinstance(v, str)]
            for position, reason in bad:
                rejected.append(
                    Rejected(
                        site,
                        service,
                        position,
                        f"{reason} (none of the service's {len(texts)} routes is followed: "
                        f"without one of them the others would take other requests)",
                    )
                )
            if bad:
                continue
            count += len(texts)
            size += weight
            for text, verdict in zip(texts, verdicts, strict=True):
                assert not isinstance(verdict, str)
                by_key.setdefault(address_key(verdict.address), []).append((text, verdict))
        for key, items in by_key.items():
            if key in local:
                shadowed.add(key)
                continue
            texts = tuple(text for text, _ in items)
            if key not in origin:
                origin[key] = site
                texts_of[key] = texts
                chosen[key] = tuple(route for _, route in items)
            elif texts_of[key] != texts:
                conflicts.setdefault(key, []).append(site)
    decoder.keep_only(seen)
    return ImportedRoutes(
        routes=chosen,
        origin=origin,
        conflicts={k: tuple(v) for k, v in conflicts.items()},
        shadowed=frozenset(shadowed),
        rejected=tuple(rejected),
    )
