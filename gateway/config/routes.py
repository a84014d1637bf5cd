"""``[[routes]]``: per L7 address, the first matching route decides where a request goes.

The schema only; compiled once per config by :func:`gateway.routes.table.compile_routes` and
documented for users in docs/routes.md.  Every rule a route's fields must obey is checked here
with the exact field path (``routes[2].match.path.regex``), so a route that decodes always
compiles: regular expressions are checked by the bounded engine itself
(:func:`gateway.routes.regex.pattern_problem`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from foundation.names import label_problem
from foundation.spiffe_id import SpiffeId
from gateway.routes.regex import pattern_problem

_TCHAR = frozenset(b"!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz")
#: Fields a route may not add, remove or match on: the connection's own, and the internal
#: ``isthmus-*`` ones that only gateways set.
_RESERVED = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "upgrade",
        "te",
        "host",
        "content-length",
    }
)
MAX_BODY_BYTES = 64 * 1024


def _header_name(value: str) -> str | None:
    raw = value.encode("ascii", "replace")
    if not raw or any(b not in _TCHAR for b in raw):
        return "must be a lowercase header name (token characters)"
    if value in _RESERVED or value.startswith(("isthmus-", "x-isthmus-", ":")):
        return f"{value!r} is reserved (connection-specific or internal to the gateways)"
    return None


def _header_names(values: tuple[str, ...]) -> str | None:
    for v in values:
        problem = _header_name(v)
        if problem:
            return f"{v!r}: {problem}"
    return None


def _header_value(value: str) -> str | None:
    if len(value) > 4096 or not all(0x20 <= ord(c) < 0x7F or c == "\t" for c in value):
        return "must be at most 4096 printable ASCII characters"
    return None


def _service(value: str) -> str | None:
    parts = value.split(".")
    if len(parts) != 2:
        return 'must be "<service>.<namespace>"'
    for part in parts:
        problem = label_problem(part)
        if problem:
            return problem
    return None


def _address(value: str) -> str | None:
    parts = value.split(".")
    if len(parts) not in (2, 3):
        return 'must be an L7 address without the mesh domain: "<service>.<namespace>[.<site>]"'
    for part in parts:
        problem = label_problem(part)
        if problem:
            return problem
    return None


def _label(value: str) -> str | None:
    return label_problem(value)


def _regex(value: str) -> str | None:
    return pattern_problem(value)


def _body(value: str) -> str | None:
    if len(value.encode("utf-8")) > MAX_BODY_BYTES:
        return f"must be at most {MAX_BODY_BYTES} bytes"
    return None


def _path(value: str) -> str | None:
    if not value.startswith("/") or len(value) > 4096 or not value.isprintable() or " " in value:
        return 'must start with "/" and be at most 4096 printable characters without spaces'
    return None


def _one_of(obj: object, names: tuple[str, ...]) -> list[tuple[str, str]]:
    given = [n for n in names if getattr(obj, n) is not None]
    if len(given) != 1:
        return [("", f"needs exactly one of {', '.join(names)} (got {len(given)})")]
    return []


@dataclass(frozen=True)
class PathMatch:
    """The request path (without the query): exactly one of ``exact``, ``prefix``, ``regex``."""

    exact: str | None = field(default=None, metadata={"check": _path})
    prefix: str | None = field(default=None, metadata={"check": _path})
    regex: str | None = field(default=None, metadata={"check": _regex})

    def problems(self) -> list[tuple[str, str]]:
        return _one_of(self, ("exact", "prefix", "regex"))


@dataclass(frozen=True)
class FieldMatch:
    """A header or query parameter: present (``present = true``), equal to ``exact``, or
    matching ``regex`` (whole value); exactly one of the three."""

    name: str
    present: bool | None = None
    exact: str | None = None
    regex: str | None = field(default=None, metadata={"check": _regex})

    def problems(self) -> list[tuple[str, str]]:
        if self.present is False:
            return [("present", "must be true (a route cannot match a missing field)")]
        return _one_of(self, ("present", "exact", "regex"))


@dataclass(frozen=True)
class RouteMatch:
    """Every given condition must hold (an empty match takes every request)."""

    path: PathMatch | None = None
    methods: tuple[str, ...] = ()
    headers: tuple[FieldMatch, ...] = ()
    query: tuple[FieldMatch, ...] = ()
    caller_ids: tuple[SpiffeId, ...] = ()
    caller_sites: tuple[str, ...] = ()

    def problems(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for i, method in enumerate(self.methods):
            if not method or not method.isascii() or not method.isupper() or not method.isalpha():
                out.append((f"methods[{i}]", "must be an uppercase method name such as GET"))
        for i, header in enumerate(self.headers):
            problem = _header_name(header.name)
            if problem:
                out.append((f"headers[{i}].name", problem))
        for i, param in enumerate(self.query):
            if not param.name or len(param.name) > 256 or not param.name.isprintable():
                out.append((f"query[{i}].name", "must be 1 to 256 printable characters"))
        for i, site in enumerate(self.caller_sites):
            problem = label_problem(site)
            if problem:
                out.append((f"caller_sites[{i}]", problem))
        return out


@dataclass(frozen=True)
class Backend:
    """A service to send the request to: in any site (failover order) or pinned to ``site``."""

    service: str = field(metadata={"check": _service})
    site: str | None = field(default=None, metadata={"check": _label})
    weight: int = field(default=1, metadata={"min": 0, "max": 1_000_000})


@dataclass(frozen=True)
class HeaderEdits:
    """Fields to add (appended after removal) and to remove."""

    add: Mapping[str, str] = field(default_factory=dict)
    remove: tuple[str, ...] = field(default=(), metadata={"check": _header_names})

    def problems(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        for name, value in self.add.items():
            problem = _header_name(name) or _header_value(value)
            if problem:
                out.append((f"add.{name}", problem))
        return out


@dataclass(frozen=True)
class DirectResponse:
    """Answer from the gateway itself, without any backend."""

    status: int = field(default=200, metadata={"min": 200, "max": 599})
    body: str = field(default="", metadata={"check": _body})
    content_type: str = field(
        default="text/plain; charset=utf-8", metadata={"check": _header_value}
    )


@dataclass(frozen=True)
class Mirror:
    """Copy ``percent`` of the requests to a second backend; its answers are discarded, and
    at most ``max_in_flight`` copies run at once (more are dropped).  A request body is
    copied while it streams to the primary, up to ``max_body_bytes`` (a larger one: that
    request is not mirrored); the copy goes out once the whole body was read and has
    ``timeout_s`` in all, its own bound, never the caller's."""

    service: str = field(metadata={"check": _service})
    site: str | None = field(default=None, metadata={"check": _label})
    percent: float = field(default=100.0, metadata={"min": 0, "max": 100})
    max_in_flight: int = field(default=16, metadata={"min": 1, "max": 1024})
    max_body_bytes: int = field(default=64 * 1024, metadata={"min": 0, "max": 16 * 1024 * 1024})
    timeout_s: float = field(default=10.0, metadata={"min": 0.001, "max": 3600})


@dataclass(frozen=True)
class RouteTimeouts:
    """``response_head_s``: to the response head (capped by ``[limits] route_timeout_s``);
    ``idle_s``: with no byte moving once the head went out."""

    response_head_s: float | None = field(default=None, metadata={"min": 0.001, "max": 3600})
    idle_s: float | None = field(default=None, metadata={"min": 0.001, "max": 86400})


@dataclass(frozen=True)
class RateLimit:
    """A token bucket per key: ``requests_per_s`` refill, ``burst`` capacity.  Over: 429."""

    requests_per_s: float = field(metadata={"min": 0.001, "max": 1_000_000})
    burst: int = field(default=1, metadata={"min": 1, "max": 1_000_000})
    key: Literal["route", "caller_id", "caller_site", "header"] = "caller_id"
    header: str | None = field(default=None, metadata={"check": _header_name})
    max_keys: int = field(default=10_000, metadata={"min": 1, "max": 1_000_000})

    def problems(self) -> list[tuple[str, str]]:
        if (self.key == "header") != (self.header is not None):
            return [("header", 'is required with key = "header" (and only then)')]
        return []


@dataclass(frozen=True)
class Fault:
    """For ``percent`` of the requests (with ``header`` present, when given): wait
    ``delay_ms``, then abort with ``abort_status`` or a reset (``abort_reset``), if set."""

    percent: float = field(default=100.0, metadata={"min": 0, "max": 100})
    delay_ms: int = field(default=0, metadata={"min": 0, "max": 3_600_000})
    abort_status: int | None = field(default=None, metadata={"min": 200, "max": 599})
    abort_reset: bool = False
    header: str | None = field(default=None, metadata={"check": _header_name})

    def problems(self) -> list[tuple[str, str]]:
        if self.abort_status is not None and self.abort_reset:
            return [("abort_reset", "cannot be combined with abort_status")]
        if not self.delay_ms and self.abort_status is None and not self.abort_reset:
            return [("", "needs delay_ms, abort_status or abort_reset")]
        return []


@dataclass(frozen=True)
class RouteConfig:
    """One route of an L7 address (see docs/routes.md)."""

    address: str = field(metadata={"check": _address})
    name: str = ""
    match: RouteMatch = field(default_factory=RouteMatch)
    backends: tuple[Backend, ...] = ()
    direct_response: DirectResponse | None = None
    request_headers: HeaderEdits = field(default_factory=HeaderEdits)
    response_headers: HeaderEdits = field(default_factory=HeaderEdits)
    rewrite_prefix: str | None = field(default=None, metadata={"check": _path})
    mirror: Mirror | None = None
    timeouts: RouteTimeouts = field(default_factory=RouteTimeouts)
    rate_limit: RateLimit | None = None
    fault: Fault | None = None

    def problems(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.direct_response is not None and self.backends:
            out.append(("direct_response", "cannot be combined with backends"))
        if self.backends and not any(b.weight for b in self.backends):
            out.append(("backends", "at least one backend needs a weight above 0"))
        if len(self.backends) > 64:
            out.append(("backends", "at most 64 backends"))
        if self.rewrite_prefix is not None and (
            self.match.path is None or self.match.path.prefix is None
        ):
            out.append(("rewrite_prefix", "needs match.path.prefix (the prefix it replaces)"))
        return out


def route_site_problems(
    routes: tuple[RouteConfig, ...], local_site: str, peers: frozenset[str]
) -> list[tuple[str, str]]:
    """Backends and mirrors pinned to a site must name this site or a configured peer (any
    other is a 404 on every request: a typo, caught at load time instead)."""
    known = peers | {local_site}
    out: list[tuple[str, str]] = []
    for i, route in enumerate(routes):
        pinned = [(f"backends[{j}].site", b.site) for j, b in enumerate(route.backends)]
        if route.mirror is not None:
            pinned.append(("mirror.site", route.mirror.site))
        for path, site in pinned:
            if site is not None and site not in known:
                out.append(
                    (
                        f"routes[{i}].{path}",
                        f"{site!r} is neither this site ({local_site!r}) nor a configured peer",
                    )
                )
    return out
