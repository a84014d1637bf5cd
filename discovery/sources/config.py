"""Configuration of discovery sources, as frozen dataclasses decoded from the gateway config.

These live in ``discovery`` (not ``gateway.config``) so that each source can be constructed
from its own config without importing the gateway.  The gateway's TOML has one
``[[sources]]`` table per source, discriminated by ``kind``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from foundation.names import label_problem
from foundation.spiffe_id import SpiffeId

Protocol = Literal["http1", "http2", "tcp", "tls"]


def _label(value: str) -> str | None:
    return label_problem(value)


@dataclass(frozen=True)
class StaticEndpointConfig:
    """One endpoint listed by hand: ``service``/``namespace`` at ``address:port``."""

    service: str = field(metadata={"check": _label})
    address: str
    port: int = field(metadata={"min": 1, "max": 65535})
    namespace: str = field(default="default", metadata={"check": _label})
    protocol: Protocol = "http1"
    weight: int = field(default=1, metadata={"min": 1, "max": 65535})
    spiffe_id: SpiffeId | None = None
    locality: str = ""
    healthy: bool = True


@dataclass(frozen=True)
class StaticSourceConfig:
    kind: Literal["static"]
    name: str = field(metadata={"check": _label})
    endpoints: tuple[StaticEndpointConfig, ...] = ()


@dataclass(frozen=True)
class MdnsSourceConfig:
    """Browse DNS-SD service types on the local link (zeroconf); optionally announce some."""

    kind: Literal["mdns"]
    name: str = field(metadata={"check": _label})
    service_types: tuple[str, ...] = ("_isthmus._tcp.local.",)
    interfaces: tuple[str, ...] = ()  # IP addresses to bind; empty = all
    default_namespace: str = field(default="default", metadata={"check": _label})
    # Bounds against a hostile or broken link (see discovery.sources.mdns_txt): instances
    # beyond max_instances are ignored (logged), TXT records above max_txt_bytes rejected.
    max_instances: int = field(default=4096, metadata={"min": 1, "max": 100_000})
    max_txt_bytes: int = field(default=4096, metadata={"min": 256, "max": 65_535})

    def problems(self) -> list[tuple[str, str]]:
        """DNS-SD service types (RFC 6763 section 7, optionally a ``_sub`` subtype) and
        interface addresses are checked here, at load time, not when zeroconf first uses them."""
        import ipaddress
        import re

        service_type = re.compile(
            r"^(?:[^.]{1,63}\._sub\.)?_[A-Za-z0-9-]{1,15}\._(?:tcp|udp)\.local\.$"
        )
        found: list[tuple[str, str]] = []
        if not self.service_types:
            found.append(("service_types", "must list at least one DNS-SD service type"))
        for i, text in enumerate(self.service_types):
            if not service_type.match(text):
                found.append(
                    (
                        f"service_types[{i}]",
                        f"{text!r} is not a DNS-SD type like '_http._tcp.local.'",
                    )
                )
        for i, text in enumerate(self.interfaces):
            try:
                ipaddress.ip_address(text)
            except ValueError:
                found.append((f"interfaces[{i}]", f"{text!r} is not an IP address"))
        return found


@dataclass(frozen=True)
class ConsulSourceConfig:
    """Consul's HTTP API with blocking queries."""

    kind: Literal["consul"]
    name: str = field(metadata={"check": _label})
    address: str = "http://127.0.0.1:8500"
    token: str | None = None
    token_file: Path | None = None
    datacenter: str | None = None
    namespace: str | None = None  # Consul Enterprise namespace (query parameter ``ns``)
    partition: str | None = None
    tags: tuple[str, ...] = ()  # only instances carrying all of these tags
    node_meta: tuple[str, ...] = ()  # "key:value" filters
    services: tuple[str, ...] = ()  # empty = every service in the catalog
    target_namespace: str = field(default="default", metadata={"check": _label})
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    wait_s: float = field(default=60.0, metadata={"min": 1.0, "max": 600.0})
    stale_grace_s: float = field(default=300.0, metadata={"min": 0.0})
    # Bounds of the HTTP client (see discovery.sources.consul_http).
    max_body_bytes: int = field(default=64 * 1024 * 1024, metadata={"min": 1024})
    max_connections: int = field(default=100, metadata={"min": 1, "max": 10000})
    connect_timeout_s: float = field(default=5.0, metadata={"min": 0.1, "max": 300.0})
    request_margin_s: float = field(default=5.0, metadata={"min": 0.1, "max": 300.0})
    # Retry schedule after errors: full jitter, ceiling doubling from base up to cap.
    backoff_base_s: float = field(default=0.5, metadata={"min": 0.001, "max": 60.0})
    backoff_cap_s: float = field(default=30.0, metadata={"min": 0.01, "max": 3600.0})


SourceConfig = StaticSourceConfig | MdnsSourceConfig | ConsulSourceConfig


def precedence(configs: Sequence[SourceConfig]) -> tuple[tuple[str, float | None], ...]:
    """Each source's name and own stale grace, in config order (= precedence, first highest).

    Only Consul has a ``stale_grace_s``; the others take the catalog's default (``None``).
    What :meth:`discovery.merge.Policy.from_sources` takes.
    """
    return tuple(
        (c.name, c.stale_grace_s if isinstance(c, ConsulSourceConfig) else None) for c in configs
    )
