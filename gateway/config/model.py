"""The gateway config schema: frozen dataclasses, decoded by :mod:`gateway.config.decode`.

A gateway config says who this site is (``[site]``), how it proves it (``[identity]``), where it
listens (``[[listeners]]``), which peers it links to (``[[peers]]``), where it learns its local
services (``[[sources]]``) and its resource limits (``[limits]``).  Every field has the default a
production gateway should run with; see ``configs/`` for examples that run as they are.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from discovery.sources.config import SourceConfig
from foundation.names import label_problem
from foundation.spiffe_id import SpiffeId, TrustDomain
from gateway.config.consul_gateways import ConsulGatewaysConfig, consul_gateways_problems
from gateway.config.debug import DebugConfig
from gateway.config.errors import UnknownValue
from gateway.config.fleet import FleetConfig, fleet_problems
from gateway.config.replicas import host_port, replica_problems
from gateway.config.resilience import BreakerConfig, RetryConfig
from gateway.config.routes import RouteConfig, route_site_problems
from overlay.federation.config import ExportConfig

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Findings = list[tuple[str, str]]


def _each(*checks: Callable[[], Findings]) -> Findings:
    """Every check's findings; a check that needs an undecoded value is skipped alone."""
    out: Findings = []
    for check in checks:
        try:
            out += check()
        except UnknownValue:
            continue
    return out


def _label(value: str) -> str | None:
    return label_problem(value)


def _label_or_any(value: str) -> str | None:
    return None if value == "*" else label_problem(value)


def _parser_available(value: str) -> str | None:
    if value == "httptools" and importlib.util.find_spec("httptools") is None:
        return "httptools is not installed (use 'auto' or 'python')"
    return None


def _mesh_domain(value: str) -> str | None:
    for part in value.split("."):
        problem = label_problem(part)
        if problem:
            return problem
    return None


def _locality(value: str) -> str | None:
    if len(value) > 253 or not value.isprintable():
        return "must be at most 253 printable characters"
    return None


#: The most worker processes a gateway runs (``[site] workers``).
MAX_WORKERS = 64


def resolve_workers(value: int | Literal["auto"]) -> int:
    """The number of worker processes ``[site] workers`` asks for: ``"auto"`` is one per
    core this process may run on (its CPU affinity, which is what a container's cpuset
    leaves it, not the host's core count), at most :data:`MAX_WORKERS`; a number is itself
    (0: no workers, the gateway is one process)."""
    if isinstance(value, int):
        return value
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux: every core the OS reports
        cores = os.cpu_count() or 1
    return max(1, min(cores, MAX_WORKERS))


@dataclass(frozen=True)
class SiteConfig:
    name: str = field(metadata={"check": _label})
    trust_domain: TrustDomain
    mesh_domain: str = field(default="isthmus", metadata={"check": _mesh_domain})
    # Tell endpoints who called them (x-isthmus-caller-id, -caller-site, -deadline-ms); the
    # default for every local service, overridden per service by [[caller_headers]].
    caller_headers: bool = True
    # This gateway's locality (zone); when set, a service's endpoints with the same locality
    # get its traffic while at least locality_min_healthy_percent of them are routable.
    locality: str = field(default="", metadata={"check": _locality})
    locality_min_healthy_percent: int = field(default=70, metadata={"min": 0, "max": 100})
    # Data-plane worker processes (docs/workers.md): "auto" (one per usable core) or a number;
    # 0 runs the whole gateway in one process.  Read with resolve_workers(); restart to change.
    workers: int | Literal["auto"] = field(
        default="auto", metadata={"min": 0, "max": MAX_WORKERS}
    )
    # With workers: how much lower the supervisor's CPU priority (Linux nice) is than its
    # workers', so requests never wait for a core behind catalog work (docs/workers.md).
    # 0 keeps them equal.  Restart to change.
    supervisor_nice: int = field(default=10, metadata={"min": 0, "max": 19})


@dataclass(frozen=True)
class BundleConfig:
    """The trust bundle of one trust domain: PEM certificates or SPIFFE bundle JSON (JWKS)."""

    trust_domain: TrustDomain
    path: Path
    format: Literal["auto", "pem", "spiffe-json"] = "auto"


@dataclass(frozen=True)
class IdentityConfig:
    """Where this gateway's X509-SVID, key and trust bundles live (as SPIRE writes them).

    Files are watched (polled every ``poll_interval_s``); a change rebuilds the TLS context for
    new connections without a restart.
    """

    svid: Path
    key: Path
    bundles: tuple[BundleConfig, ...] = field(metadata={"unique": "trust_domain"})
    poll_interval_s: float = field(default=1.0, metadata={"min": 0.05, "max": 3600.0})

    def problems(self) -> list[tuple[str, str]]:
        if not self.bundles:
            return [("bundles", "at least one trust bundle is required")]
        return []


@dataclass(frozen=True)
class ListenerConfig:
    """A socket the gateway accepts on.

    ``east-west`` is the mTLS listener for peer gateways; ``http`` takes local HTTP/1.1, h2c and
    HTTP proxy callers; ``sni`` routes TLS by its SNI without terminating it; ``admin`` serves
    the admin API.
    """

    name: str = field(metadata={"check": _label})
    kind: Literal["east-west", "http", "sni", "admin"]
    address: IPAddress
    port: int = field(metadata={"min": 0, "max": 65535})
    # http only: terminate TLS (ALPN h2 / http/1.1) with this gateway's SVID; a caller that
    # presents an SVID of a trusted trust domain is authenticated as that SPIFFE ID.
    tls: bool = False

    def problems(self) -> list[tuple[str, str]]:
        if self.tls and self.kind != "http":
            return [("tls", "only listeners of kind 'http' terminate TLS")]
        return []


def _l7_address(value: str) -> str | None:
    parts = value.split(".")
    if len(parts) < 3:
        return f"{value!r} is not an L7 address (<service>.<namespace>[.<site>].<mesh-domain>)"
    for part in parts:
        problem = label_problem(part)
        if problem:
            return f"{value!r}: {problem}"
    return None


@dataclass(frozen=True)
class ServicePortConfig:
    """Bind a local port to a (possibly remote) service, for clients that only know host:port.

    ``protocol = "tcp"`` carries raw bytes (an L4 tunnel); ``"http"`` parses HTTP/1.1 and
    routes every request to ``target`` whatever its Host header says.
    """

    name: str = field(metadata={"check": _label})
    address: IPAddress
    port: int = field(metadata={"min": 0, "max": 65535})
    target: str = field(metadata={"check": _l7_address})
    protocol: Literal["tcp", "http"] = "tcp"


@dataclass(frozen=True)
class PolicyConfig:
    """Who may call a local service from *other* sites (checked by the destination gateway).

    Default when no policy matches a service: callers from this site only.  ``allow_sites``
    names origin sites (``"*"`` = any peer site); ``allow_ids`` names caller SPIFFE IDs
    (authenticated at the origin gateway and carried over the authenticated link).  A request
    is allowed if its origin site or its caller ID is listed.
    """

    service: str = "*"
    namespace: str = "*"
    allow_sites: tuple[str, ...] = ()
    allow_ids: tuple[SpiffeId, ...] = ()


def _log_path(value: str) -> str | None:
    if value == "-":
        return None
    if "\0" in value:
        return "must not contain a NUL byte"
    if not value.startswith("/"):
        return 'must be "-" (stdout) or an absolute file path'
    return None


@dataclass(frozen=True)
class MetricsConfig:
    """``[metrics]``: the counters and histograms of every request, served at ``/metrics``
    on the admin listener (docs/metrics.md).  ``enabled = false`` (and no access log) takes
    every observation off the data path; ``/metrics`` is then 404."""

    enabled: bool = True


@dataclass(frozen=True)
class AccessLogConfig:
    """``[access_log]``: one JSON line per request and tunnel (docs/metrics.md).

    ``path`` ``"-"`` is stdout, else an absolute file path, appended to.  ``sample_rate`` (0 to 1)
    keeps that share of requests, chosen by request ID so that both gateways of an exchange
    keep the same ones.
    """

    enabled: bool = False
    path: str = field(default="-", metadata={"check": _log_path})
    sample_rate: float = field(default=1.0, metadata={"min": 0.0, "max": 1.0})


@dataclass(frozen=True)
class CallerHeadersConfig:
    """Whether the endpoints of matching local services get the caller headers.

    The first rule whose ``service``/``namespace`` (``"*"`` = any) matches decides; without
    one, ``[site] caller_headers`` does.  Caller-sent ``x-isthmus-*`` headers are removed
    either way.
    """

    service: str = field(default="*", metadata={"check": _label_or_any})
    namespace: str = field(default="*", metadata={"check": _label_or_any})
    enabled: bool = True


_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def _field_name(value: str) -> str | None:
    if not value or len(value) > 256 or not set(value) <= _TOKEN:
        return "must be an HTTP field name (letters, digits and !#$%&'*+-.^_`|~)"
    return None


def _cookie_name(value: str) -> str | None:
    return _field_name(value)


@dataclass(frozen=True)
class OutlierDetectionConfig:
    """Passive outlier detection, site-wide (``[outlier_detection]``); see docs/load-balancing.md.

    An endpoint that answers ``consecutive_5xx`` 5xx in a row, or fails
    ``consecutive_connect_failures`` connects in a row, is ejected for
    ``base_ejection_time_s * n`` (its n-th ejection), at most ``max_ejection_time_s``; at most
    ``max_ejected_percent`` of a service's endpoints (at least one) are ejected at once.  A
    threshold of 0 turns that kind off.
    """

    enabled: bool = True
    consecutive_5xx: int = field(default=5, metadata={"min": 0, "max": 10_000})
    consecutive_connect_failures: int = field(default=5, metadata={"min": 0, "max": 10_000})
    base_ejection_time_s: float = field(default=30.0, metadata={"min": 0.001, "max": 86_400.0})
    max_ejection_time_s: float = field(default=300.0, metadata={"min": 0.001, "max": 86_400.0})
    max_ejected_percent: int = field(default=10, metadata={"min": 0, "max": 100})

    def problems(self) -> list[tuple[str, str]]:
        if self.max_ejection_time_s < self.base_ejection_time_s:
            return [("max_ejection_time_s", "must be at least base_ejection_time_s")]
        return []


@dataclass(frozen=True)
class OutlierOverrideConfig:
    """Per-service changes to ``[outlier_detection]``; an unset field keeps the site's value."""

    enabled: bool | None = None
    consecutive_5xx: int | None = field(default=None, metadata={"min": 0, "max": 10_000})
    consecutive_connect_failures: int | None = field(
        default=None, metadata={"min": 0, "max": 10_000}
    )
    base_ejection_time_s: float | None = field(
        default=None, metadata={"min": 0.001, "max": 86_400.0}
    )
    max_ejection_time_s: float | None = field(
        default=None, metadata={"min": 0.001, "max": 86_400.0}
    )
    max_ejected_percent: int | None = field(default=None, metadata={"min": 0, "max": 100})


def _path(value: str) -> str | None:
    if not value.startswith("/") or len(value) > 1024 or not value.isprintable() or " " in value:
        return "must be an origin-form path starting with / (no spaces, at most 1024 bytes)"
    return None


@dataclass(frozen=True)
class HealthCheckConfig:
    """Active health checks of one service's endpoints (``[service_traffic.health_check]``)."""

    kind: Literal["http", "tcp"] = "tcp"
    path: str = field(default="/", metadata={"check": _path})  # http: GET, 2xx/3xx is good
    interval_s: float = field(default=10.0, metadata={"min": 0.05, "max": 3600.0})
    timeout_s: float = field(default=2.0, metadata={"min": 0.01, "max": 600.0})
    healthy_threshold: int = field(default=2, metadata={"min": 1, "max": 100})
    unhealthy_threshold: int = field(default=3, metadata={"min": 1, "max": 100})

    def problems(self) -> list[tuple[str, str]]:
        if self.timeout_s > self.interval_s:
            return [("timeout_s", "must be at most interval_s")]
        return []


@dataclass(frozen=True)
class ServiceTrafficConfig:
    """How the gateway balances one local service (``[[service_traffic]]``).

    The first rule whose ``service``/``namespace`` (``"*"`` = any) matches applies.
    """

    service: str = field(default="*", metadata={"check": _label_or_any})
    namespace: str = field(default="*", metadata={"check": _label_or_any})
    # weighted_round_robin (endpoint weights), least_request (power of two choices), or
    # ring_hash (a consistent hash ring keyed by hash_header or hash_cookie).
    lb: Literal["weighted_round_robin", "least_request", "ring_hash"] = "weighted_round_robin"
    hash_header: str | None = field(default=None, metadata={"check": _field_name})
    hash_cookie: str | None = field(default=None, metadata={"check": _cookie_name})
    outlier_detection: OutlierOverrideConfig = field(default_factory=OutlierOverrideConfig)
    health_check: HealthCheckConfig | None = None
    # The router's side, for calls to the service in any site (gateway/config/resilience.py).
    retries: RetryConfig = field(default_factory=RetryConfig)
    breakers: BreakerConfig = field(default_factory=BreakerConfig)

    def problems(self) -> list[tuple[str, str]]:
        keys = (self.hash_header is not None) + (self.hash_cookie is not None)
        if self.lb == "ring_hash" and keys != 1:
            return [("lb", "ring_hash needs exactly one of hash_header and hash_cookie")]
        if self.lb != "ring_hash" and keys:
            return [("lb", 'hash_header / hash_cookie need lb = "ring_hash"')]
        return []


@dataclass(frozen=True)
class PeerConfig:
    """A peer gateway this site dials, and the exact SPIFFE ID it must present."""

    name: str = field(metadata={"check": _label})
    spiffe_id: SpiffeId
    address: str = ""  # one gateway (with ``port``), or ``addresses``: the site's replicas
    port: int = field(default=0, metadata={"min": 0, "max": 65535})
    priority: int = field(default=100, metadata={"min": 0, "max": 1_000_000})
    dial: bool = True  # false: the peer is outbound-only (behind NAT) and dials us
    #: The site's replicas, ``"host:port"`` each (docs/replicas.md); instead of address/port.
    addresses: tuple[str, ...] = ()
    #: "consul": also link to the replicas registered as ``isthmus-gateway`` for this site
    #: (``[consul_gateways]``; docs/replicas.md); the static address(es) become optional.
    discover: Literal["", "consul"] = ""

    def replica_addresses(self) -> tuple[tuple[str, int], ...]:
        """Every configured gateway of the peer site as (host, port): ``addresses``, else
        the one (none for a discovering peer without a static address)."""
        if not self.addresses:
            if self.discover and not self.address and not self.port:
                return ()
            return ((self.address, self.port),)
        return tuple(host_port(a) for a in self.addresses)

    def problems(self) -> list[tuple[str, str]]:
        static = self.address or self.port or self.addresses
        out = replica_problems(self.address, self.port, self.addresses)
        if self.discover and not static:
            out = []
        try:
            if not self.spiffe_id.path:
                why = "a peer's SPIFFE ID needs a path (a workload, not a domain)"
                out.append(("spiffe_id", why))
        except UnknownValue:  # its own problem is reported; the address ones still are
            pass
        return out


@dataclass(frozen=True)
class PeeringConfig:
    """Link liveness and federation timing.

    A dead link is declared down at most ``ping_interval_s + ping_timeout_s`` after it died
    (a new link's first PING waits ``connect_timeout_s``: at most ``ping_interval_s +
    connect_timeout_s`` for a peer silent from the start; see overlay/h2/liveness.py);
    its imports stay (stale, not routed to) for ``import_grace_s``, then are withdrawn.
    """

    ping_interval_s: float = field(default=5.0, metadata={"min": 0.05, "max": 3600.0})
    ping_timeout_s: float = field(default=3.0, metadata={"min": 0.05, "max": 3600.0})
    connect_timeout_s: float = field(default=10.0, metadata={"min": 0.05, "max": 600.0})
    ack_timeout_s: float = field(default=30.0, metadata={"min": 0.1, "max": 3600.0})
    import_grace_s: float = field(default=60.0, metadata={"min": 0.0, "max": 86400.0})
    backoff_base_s: float = field(default=0.25, metadata={"min": 0.01, "max": 60.0})
    backoff_cap_s: float = field(default=30.0, metadata={"min": 0.1, "max": 3600.0})
    # Failed dials to a never-linked peer in the first seconds are logged at INFO, not WARNING:
    # sites that start together cannot reach each other at once.
    startup_grace_s: float = field(default=30.0, metadata={"min": 0.0, "max": 3600.0})
    # Never redial a peer sooner than this (0: full jitter may retry at once).
    backoff_floor_s: float = field(default=0.0, metadata={"min": 0.0, "max": 3600.0})

    def problems(self) -> list[tuple[str, str]]:
        if self.backoff_floor_s > self.backoff_cap_s:
            return [("backoff_floor_s", "must not exceed backoff_cap_s")]
        return []


@dataclass(frozen=True)
class AnnounceServiceConfig:
    """One local service this gateway announces over mDNS (DNS-SD), with the TXT keys that
    the ``mdns`` source reads (see README, "mDNS")."""

    service: str = field(metadata={"check": _label})
    address: IPAddress
    port: int = field(metadata={"min": 1, "max": 65535})
    namespace: str = field(default="default", metadata={"check": _label})
    protocol: Literal["http1", "http2", "tcp", "tls"] = "http1"
    spiffe_id: SpiffeId | None = None
    weight: int = field(default=1, metadata={"min": 1, "max": 65535})
    locality: str = ""
    service_type: str = "_isthmus._tcp.local."
    ttl_s: int = field(default=120, metadata={"min": 1, "max": 86400})


@dataclass(frozen=True)
class MdnsAnnounceConfig:
    interfaces: tuple[IPAddress, ...] = ()  # addresses to announce on; empty = all
    services: tuple[AnnounceServiceConfig, ...] = ()


@dataclass(frozen=True)
class LimitsConfig:
    """Resource limits; docs/limits.md lists each default and what happens when exceeded."""

    max_header_bytes: int = field(default=60 * 1024, metadata={"min": 1024})
    max_headers: int = field(default=100, metadata={"min": 1})
    h2_max_header_list_bytes: int = field(default=64 * 1024, metadata={"min": 1024})
    h2_max_concurrent_streams: int = field(default=100, metadata={"min": 1})
    h2_stream_window: int = field(default=64 * 1024, metadata={"min": 1024, "max": 2**31 - 1})
    h2_connection_window: int = field(default=1024 * 1024, metadata={"min": 1024, "max": 2**31 - 1})
    # An L4 tunnel reads at most this much per direction before writing it on, so it never
    # holds more than this per direction (a slow reader stalls its writer).
    tunnel_buffer_bytes: int = field(
        default=64 * 1024, metadata={"min": 1024, "max": 16 * 1024 * 1024}
    )
    header_timeout_s: float = field(default=10.0, metadata={"min": 0.01})
    idle_timeout_s: float = field(default=300.0, metadata={"min": 0.01})
    tls_handshake_timeout_s: float = field(default=10.0, metadata={"min": 0.01})
    max_connections: int = field(default=10_000, metadata={"min": 1})
    # TLS handshakes of links (dialed and accepted together) this gateway runs at once; the
    # rest wait in arrival order within their timeout, and past 8 per slot waiting a new one is
    # refused (closed; a dialer backs off).  A gateway with many peers that all start together
    # then finishes a few handshakes quickly instead of losing them all to timeouts.
    max_concurrent_handshakes: int = field(default=32, metadata={"min": 1, "max": 4096})
    # Time to the response *head* (504 when it passes); a streaming body is bounded by
    # ``stream_idle_timeout_s`` (no byte either way) and ``max_stream_duration_s`` instead.
    route_timeout_s: float = field(default=15.0, metadata={"min": 0.01})
    stream_idle_timeout_s: float = field(default=300.0, metadata={"min": 0.01})
    # The longest an exchange may last, head and body; unset: no maximum.  Per route once
    # traffic config has routes.
    max_stream_duration_s: float | None = field(default=None, metadata={"min": 0.01})
    # A caller that takes no byte of what the gateway sends for this long has its connection
    # closed abortively (RST), so no kernel send queue is left behind.
    send_timeout_s: float = field(default=30.0, metadata={"min": 0.01})
    # Links between gateways carry many tunnels of bulk data between trusted peers: larger
    # windows and frames than for callers (measured: 64 KiB windows cap a tunnel at ~60 MB/s
    # on loopback, 1 MiB about doubles it).  A tunnel's window starts at ``link_stream_window``
    # and grows (doubling) up to ``link_stream_window_max`` while its consumer keeps it full;
    # back to the start when idle.  Still bounded: at most the connection window of unread
    # data per link, and ``buffer_budget`` for all links' windows together.
    link_stream_window: int = field(default=64 * 1024, metadata={"min": 65535, "max": 2**31 - 1})
    link_stream_window_max: int = field(
        default=1024 * 1024, metadata={"min": 65535, "max": 2**31 - 1}
    )
    # Bytes every tunnel's receive window may hold together, gateway-wide: past it, windows
    # stay at ``link_stream_window`` (nothing fails; tunnels are only slower).
    buffer_budget: int = field(default=256 * 1024 * 1024, metadata={"min": 0, "max": 2**48})
    # Bytes the routes' mirrors may hold together, gateway-wide: request bodies copied for
    # a mirror until it has sent them.  Past it a request is not mirrored (the caller's own
    # request is untouched); applied live by a reload.
    mirror_buffer_budget: int = field(default=16 * 1024 * 1024, metadata={"min": 0, "max": 2**40})
    link_connection_window: int = field(
        default=8 * 1024 * 1024, metadata={"min": 65535, "max": 2**31 - 1}
    )
    link_max_frame_size: int = field(default=64 * 1024, metadata={"min": 16384, "max": 16777215})
    # Stream slots of one link: a link carries a whole site's cross-site traffic (every
    # caller's requests and tunnels), so it has far more slots than one caller's connection.
    # Each holds at most ``link_stream_window_max`` of buffered data.
    link_max_concurrent_streams: int = field(default=1000, metadata={"min": 1, "max": 2**31 - 1})
    # Links this site may hold to each peer it dials: another is opened when every link has
    # 80 % of the peer's stream slots in use, and an extra one idle for a minute is drained
    # and closed (docs/link-fair-sharing.md).  1: one link per peer, no pool.
    link_max_per_peer: int = field(default=4, metadata={"min": 1, "max": 64})
    # One caller's share (its SPIFFE ID, else the address it connects from) of the streams
    # towards one peer site, across that peer's links: over it, a new stream waits up to
    # ``link_caller_wait_s`` for one of the caller's own to end, then gets a 503.  With it, a
    # caller buffers at most this many ``link_stream_window_max``s per peer.
    link_caller_max_streams: int = field(default=100, metadata={"min": 1, "max": 2**31 - 1})
    link_caller_wait_s: float = field(default=1.0, metadata={"min": 0.0, "max": 60.0})
    link_outbound_buffer: int = field(default=1024 * 1024, metadata={"min": 16384})
    # The HTTP/2 protocol engine of links: "lean" (our codec, several times cheaper per
    # exchange; both ends are Isthmus gateways) or "h2" (python-hyper h2, the fallback).  The
    # two ends of a link may differ: both speak plain RFC 9113.
    link_h2_engine: Literal["lean", "h2"] = "lean"
    # The HTTP/2 protocol engine of callers' connections (h2c and h2 over TLS): "lean" (our
    # codec) or "h2" (python-hyper h2).  The same limits, flood guards and answers either way
    # (tests/gateway/listener run on both); a listener reads it once, so it needs a restart.
    caller_h2_engine: Literal["lean", "h2"] = "lean"
    # Who tokenises HTTP/1.1 heads (callers' requests, endpoints' responses): ``auto`` is
    # llhttp (httptools) when installed, else the pure-Python parser; the same rules and
    # errors either way (gateway/http/h1_fast.py).
    http1_parser: Literal["auto", "httptools", "python"] = field(
        default="auto", metadata={"check": _parser_available}
    )
    # On shutdown (SIGTERM, SIGINT), how long callers' requests in flight may take to finish
    # once the listeners have stopped accepting (docs/workers.md); then the rest are cut.
    drain_grace_s: float = field(default=10.0, metadata={"min": 0.0, "max": 3600.0})

    def problems(self) -> list[tuple[str, str]]:
        if self.link_stream_window_max < self.link_stream_window:
            return [("link_stream_window_max", "must be at least link_stream_window")]
        return []


@dataclass(frozen=True)
class GatewayConfig:
    site: SiteConfig
    identity: IdentityConfig
    listeners: tuple[ListenerConfig, ...] = field(default=(), metadata={"unique": "name"})
    peers: tuple[PeerConfig, ...] = field(default=(), metadata={"unique": "name"})
    sources: tuple[SourceConfig, ...] = field(default=(), metadata={"unique": "name"})
    exports: tuple[ExportConfig, ...] = ()
    peering: PeeringConfig = field(default_factory=PeeringConfig)
    service_ports: tuple[ServicePortConfig, ...] = field(default=(), metadata={"unique": "name"})
    policies: tuple[PolicyConfig, ...] = ()
    caller_headers: tuple[CallerHeadersConfig, ...] = ()
    outlier_detection: OutlierDetectionConfig = field(default_factory=OutlierDetectionConfig)
    service_traffic: tuple[ServiceTrafficConfig, ...] = ()
    mdns_announce: MdnsAnnounceConfig = field(default_factory=MdnsAnnounceConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    access_log: AccessLogConfig = field(default_factory=AccessLogConfig)
    debug: DebugConfig = field(default_factory=DebugConfig)
    fleet: FleetConfig = field(default_factory=FleetConfig)
    routes: tuple[RouteConfig, ...] = ()  # docs/routes.md
    consul_gateways: ConsulGatewaysConfig = field(default_factory=ConsulGatewaysConfig)

    def problems(self) -> list[tuple[str, str]]:
        # Independent rules, each skipped alone when it needs a value that did not decode
        # (the decoder runs them on a partly decoded config too: one run reports everything).
        return _each(
            self._bind_problems,
            self._peer_problems,
            self._export_problems,
            self._service_traffic_problems,
            lambda: fleet_problems(self),
            self._route_problems,
            lambda: consul_gateways_problems(self),
        )

    def _route_problems(self) -> list[tuple[str, str]]:
        peers = frozenset(p.name for p in self.peers)
        return route_site_problems(self.routes, self.site.name, peers)

    def _service_traffic_problems(self) -> list[tuple[str, str]]:
        """A per-service override must leave max_ejection_time_s >= base_ejection_time_s."""
        site = self.outlier_detection
        out: list[tuple[str, str]] = []
        for i, rule in enumerate(self.service_traffic):
            o = rule.outlier_detection
            base = o.base_ejection_time_s or site.base_ejection_time_s
            most = o.max_ejection_time_s or site.max_ejection_time_s
            if most < base:
                out.append(
                    (
                        f"service_traffic[{i}].outlier_detection.max_ejection_time_s",
                        "must be at least base_ejection_time_s",
                    )
                )
        return out

    def _bind_problems(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        binds = [
            (f"listeners[{i}].port", f"{li.address}:{li.port}", li.port)
            for i, li in enumerate(self.listeners)
        ]
        binds += [
            (f"service_ports[{i}].port", f"{sp.address}:{sp.port}", sp.port)
            for i, sp in enumerate(self.service_ports)
        ]
        seen: set[str] = set()
        for path, bind, port in binds:
            if port != 0 and bind in seen:
                out.append((path, f"{bind} is already used by another listener"))
            seen.add(bind)
        return out

    def _peer_problems(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.peers and self.listener("east-west") is None:
            out.append(("peers", "peers need a listener of kind 'east-west'"))
        for i, peer in enumerate(self.peers):
            if peer.name == self.site.name:
                out.append((f"peers[{i}].name", "a peer must not have this site's own name"))
        return out

    def _export_problems(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        peer_names = {p.name for p in self.peers}
        for i, export in enumerate(self.exports):
            for j, name in enumerate(export.peers):
                if name not in peer_names:
                    out.append((f"exports[{i}].peers[{j}]", f"no peer is named {name!r}"))
        return out

    def warnings(self) -> list[tuple[str, str]]:
        """Settings that are valid but cannot do what they say (printed, never fatal)."""
        return _each(
            self._policy_site_warnings, self._policy_id_warnings, self._worker_dial_warnings
        )

    def _worker_dial_warnings(self) -> list[tuple[str, str]]:
        """A worker reaches a peer over the links it dials itself; a peer this site does not
        dial is reached only by the links the peer's own workers open, which land on some of
        this site's workers, not all (docs/workers.md, "Limits")."""
        if self.site.workers == 0:
            return []
        return [
            (
                f"peers[{i}].dial",
                f"peer {p.name!r} is not dialed and [site] workers is not 0: the workers "
                "this site's requests run on have no link to it unless it dials them "
                "(see docs/workers.md)",
            )
            for i, p in enumerate(self.peers)
            if not p.dial
        ]

    def _policy_site_warnings(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        peer_names = {p.name for p in self.peers}
        for i, policy in enumerate(self.policies):
            for j, site in enumerate(policy.allow_sites):
                path = f"policies[{i}].allow_sites[{j}]"
                if site == self.site.name:
                    out.append((path, f"{site!r} is this site: its own callers need no policy"))
                elif site != "*" and site not in peer_names:
                    out.append((path, f"no peer is named {site!r}: this entry allows nobody"))
        return out

    def _policy_id_warnings(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        trusted = {self.site.trust_domain} | {b.trust_domain for b in self.identity.bundles}
        names = ", ".join(sorted(str(td) for td in trusted))
        for i, policy in enumerate(self.policies):
            for j, caller in enumerate(policy.allow_ids):
                if caller.trust_domain not in trusted:
                    out.append(
                        (
                            f"policies[{i}].allow_ids[{j}]",
                            f"trust domain {caller.trust_domain} is not configured ({names}): "
                            "no caller can present this ID",
                        )
                    )
        return out

    def listener(self, kind: str) -> ListenerConfig | None:
        return next((li for li in self.listeners if li.kind == kind), None)
