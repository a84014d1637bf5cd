"""The route table: compiled once per config, asked once per request (pure, no trio).

Why compiled: a request's route is decided on every request, so everything that can be
decided from the config alone is done once here -- patterns compiled by the bounded engine
(:mod:`gateway.routes.regex`), methods and caller sets turned into frozensets, backends into
a cumulative-weight list for a draw by bisection, routes grouped by their L7 address.
:meth:`RouteTable.match` then only walks the routes of the request's own address, in config
order, and returns the first whose every condition holds (or None: today's behaviour).

A header condition holds when any of the field's values satisfies it (fields may repeat);
query parameters are matched on their raw (still percent-encoded) text.
"""

from __future__ import annotations

import bisect
import heapq
from collections.abc import Callable
from dataclasses import dataclass, field

from foundation.spiffe_id import SpiffeId
from gateway.config.routes import FieldMatch, RouteConfig
from gateway.http.message import Headers
from gateway.routes.regex import Regex, compile_pattern

#: ``(service, namespace, site or None)``: the key of an L7 address.
AddressKey = tuple[str, str, str | None]


@dataclass(frozen=True, slots=True)
class RequestView:
    """What a route may look at: the request head and who sent it."""

    method: bytes
    path: bytes  # origin-form, query included
    headers: Headers
    caller_id: SpiffeId | None
    caller_site: str
    path_only: bytes = b""  # the path without the query (see :func:`view_of`)

    def query(self) -> list[tuple[bytes, bytes]]:
        raw = self.path.partition(b"?")[2]
        out = []
        for part in raw.split(b"&") if raw else ():
            name, _, value = part.partition(b"=")
            out.append((name, value))
        return out


def view_of(
    method: bytes, path: bytes, headers: Headers, caller_id: SpiffeId | None, caller_site: str
) -> RequestView:
    return RequestView(method, path, headers, caller_id, caller_site, path.partition(b"?")[0])


Check = Callable[[RequestView], bool]


@dataclass(frozen=True, slots=True)
class CompiledRoute:
    """One route, ready to match; ``index`` is its position in ``[[routes]]``."""

    index: int
    config: RouteConfig
    checks: tuple[Check, ...]
    #: Backend authorities (``service.namespace[.site].<mesh>``) and cumulative weights.
    hosts: tuple[bytes, ...]
    cumulative: tuple[int, ...]
    strip_prefix: bytes | None  # the matched prefix that ``rewrite_prefix`` replaces
    mirror_host: bytes | None
    #: What the path must be (``exact``) or start with (``prefix``, also a regex's literal
    #: start) for the route to have a chance: the key of :class:`PathIndex`.
    gate: tuple[str, tuple[bytes, ...]] | None = None

    @property
    def label(self) -> str:
        return self.config.name or f"routes[{self.index}]"

    def matches(self, view: RequestView) -> bool:
        for check in self.checks:  # noqa: SIM110 (a loop: no generator per route)
            if not check(view):
                return False
        return True

    def pick(self, draw: float) -> bytes | None:
        """The backend for a uniform ``draw`` in [0, 1) (None: no backends, keep the address)."""
        if not self.hosts:
            return None
        total = self.cumulative[-1]
        return self.hosts[bisect.bisect_right(self.cumulative, draw * total)]


def _field_check(match: FieldMatch) -> Callable[[list[bytes]], bool]:
    """A predicate on a field's values (empty list: the field is absent)."""
    if match.present:
        return bool
    if match.exact is not None:
        want = match.exact.encode("latin-1", "replace")
        return lambda values: want in values
    assert match.regex is not None
    test = _regex_test(compile_pattern(match.regex))
    return lambda values: any(test(v) for v in values)


def _regex_test(regex: Regex) -> Callable[[bytes], bool]:
    """``regex.fullmatch``, after a cheap ``in`` for the bytes every match contains."""
    required = regex.required
    if len(required) < 2:
        return regex.fullmatch
    return lambda value: required in value and regex.fullmatch(value)


def _header_check(match: FieldMatch) -> Check:
    name = match.name.encode("ascii")
    test = _field_check(match)
    return lambda view: test([v for k, v in view.headers if k == name])


def _query_check(match: FieldMatch) -> Check:
    name = match.name.encode("latin-1", "replace")
    test = _field_check(match)
    return lambda view: test([v for k, v in view.query() if k == name])


def _gate(route: RouteConfig) -> tuple[str, tuple[bytes, ...]] | None:
    path = route.match.path
    if path is None:
        return None
    if path.exact is not None:
        return "exact", (path.exact.encode(),)
    if path.prefix is not None:
        return "prefix", (path.prefix.encode(),)
    assert path.regex is not None
    starts = compile_pattern(path.regex).prefix
    return ("prefix", starts) if starts else None


def _checks(route: RouteConfig) -> tuple[Check, ...]:
    """The route's conditions, cheapest and most selective first."""
    m = route.match
    out: list[Check] = []
    if m.path is not None:
        p = m.path
        if p.exact is not None:
            exact = p.exact.encode()
            out.append(lambda view: view.path_only == exact)
        elif p.prefix is not None:
            prefix = p.prefix.encode()
            out.append(lambda view: view.path_only.startswith(prefix))
        else:
            assert p.regex is not None
            regex = compile_pattern(p.regex)
            required = regex.required
            if len(required) >= 2:  # one call per route: the common refusal stays cheap
                out.append(
                    lambda view: required in view.path_only and regex.fullmatch(view.path_only)
                )
            else:
                out.append(lambda view: regex.fullmatch(view.path_only))
    if m.methods:
        methods = frozenset(x.encode() for x in m.methods)
        out.append(lambda view: view.method in methods)
    if m.caller_sites:
        sites = frozenset(m.caller_sites)
        out.append(lambda view: view.caller_site in sites)
    if m.caller_ids:
        ids = frozenset(m.caller_ids)
        out.append(lambda view: view.caller_id in ids)
    out.extend(_header_check(h) for h in m.headers)
    out.extend(_query_check(q) for q in m.query)
    return tuple(out)


def _host(service: str, site: str | None, mesh_domain: str) -> bytes:
    return (service + (f".{site}" if site else "") + f".{mesh_domain}").encode("ascii")


def compile_route(index: int, route: RouteConfig, mesh_domain: str) -> CompiledRoute:
    hosts: list[bytes] = []
    cumulative: list[int] = []
    total = 0
    for backend in route.backends:
        if backend.weight <= 0:
            continue
        total += backend.weight
        hosts.append(_host(backend.service, backend.site, mesh_domain))
        cumulative.append(total)
    path = route.match.path
    strip = None
    if route.rewrite_prefix is not None and path is not None and path.prefix is not None:
        strip = path.prefix.encode()
    mirror = route.mirror
    return CompiledRoute(
        index=index,
        config=route,
        checks=_checks(route),
        hosts=tuple(hosts),
        cumulative=tuple(cumulative),
        strip_prefix=strip,
        mirror_host=None if mirror is None else _host(mirror.service, mirror.site, mesh_domain),
        gate=_gate(route),
    )


def address_key(text: str) -> AddressKey:
    """``"svc.ns"`` or ``"svc.ns.site"`` (as validated by the config) -> its key."""
    parts = text.lower().split(".")
    return parts[0], parts[1], parts[2] if len(parts) == 3 else None


#: An address with more routes than this gets a :class:`PathIndex`.
INDEX_MIN_ROUTES = 16


class PathIndex:
    """The routes of one address by their path gate, so a request walks only the routes its
    path can match (in config order: first match still wins).

    Why: with hundreds of routes on one address, testing each in turn costs per request what
    the whole forwarding does.  Routes whose path is exact or a prefix (or a regex with a
    literal start) are found by dictionary lookups -- one for the exact path, one per distinct
    prefix length -- and merged, by position, with the routes that have no such gate.
    """

    __slots__ = ("exact", "lengths", "open", "prefixes", "routes")

    def __init__(self, routes: tuple[CompiledRoute, ...]) -> None:
        self.routes = routes
        self.exact: dict[bytes, list[int]] = {}
        self.prefixes: dict[bytes, list[int]] = {}
        open_: list[int] = []
        for i, route in enumerate(routes):
            if route.gate is None:
                open_.append(i)
            else:
                kind, values = route.gate
                where = self.exact if kind == "exact" else self.prefixes
                for value in values:
                    where.setdefault(value, []).append(i)
        self.open = tuple(open_)
        self.lengths = tuple(sorted({len(p) for p in self.prefixes}))

    def match(self, view: RequestView) -> CompiledRoute | None:
        path = view.path_only
        found: list[int] = list(self.exact.get(path, ()))
        prefixes = self.prefixes
        for length in self.lengths:
            if length > len(path):
                break
            hit = prefixes.get(path[:length])
            if hit is not None:
                found += hit
        # A route found under two of its starts (``/a`` and ``/a/``) is tried once.
        hits = sorted(set(found)) if len(found) > 1 else found
        candidates = heapq.merge(hits, self.open) if self.open else hits
        routes = self.routes
        for i in candidates:
            if routes[i].matches(view):
                return routes[i]
        return None


@dataclass(frozen=True, slots=True)
class RouteTable:
    """Every route, grouped by address in config order."""

    by_address: dict[AddressKey, tuple[CompiledRoute, ...]]
    indexes: dict[AddressKey, PathIndex] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(routes) for routes in self.by_address.values())

    def match(self, key: AddressKey, view: RequestView) -> CompiledRoute | None:
        """The first route of ``key`` whose conditions all hold, or None."""
        index = self.indexes.get(key)
        if index is not None:
            return index.match(view)
        for route in self.by_address.get(key, ()):
            if route.matches(view):
                return route
        return None


def compile_routes(routes: tuple[RouteConfig, ...], mesh_domain: str) -> RouteTable:
    grouped: dict[AddressKey, list[CompiledRoute]] = {}
    for i, route in enumerate(routes):
        grouped.setdefault(address_key(route.address), []).append(
            compile_route(i, route, mesh_domain)
        )
    by_address = {key: tuple(items) for key, items in grouped.items()}
    indexes = {
        key: PathIndex(items) for key, items in by_address.items() if len(items) > INDEX_MIN_ROUTES
    }
    return RouteTable(by_address, indexes)
