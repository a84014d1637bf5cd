"""``[fleet]``: where a gateway takes its fleet-wide settings from (docs/fleet.md).

The fleet document (``gateway.fleet``) is read from Consul KV under ``prefix``, through the
Consul agent of one of the site's own ``[[sources]]`` of kind ``consul`` (its address, ACL
token, TLS and datacenter): a site that discovers services from Consul already trusts that
agent, and a second set of Consul settings would only drift from the first.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from discovery.sources.config import ConsulSourceConfig

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig

_PREFIX = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def _prefix(value: str) -> str | None:
    if not _PREFIX.match(value) or any(part in (".", "..") for part in value.split("/")):
        return "must be a KV path like 'isthmus/fleet' (no leading or trailing '/')"
    return None


@dataclass(frozen=True)
class FleetConfig:
    # "none": no fleet document (today's way: each site's own file only).
    source: Literal["none", "consul"] = "none"
    prefix: str = field(default="isthmus/fleet", metadata={"check": _prefix})
    # The [[sources]] entry (kind "consul") whose agent, token and TLS to use; "" = the only one.
    consul_source: str = ""
    wait_s: float = field(default=60.0, metadata={"min": 1.0, "max": 600.0})
    max_document_bytes: int = field(default=512 * 1024, metadata={"min": 1024, "max": 512 * 1024})
    max_resources: int = field(default=1000, metadata={"min": 1, "max": 10_000})
    backoff_base_s: float = field(default=0.5, metadata={"min": 0.001, "max": 60.0})
    backoff_cap_s: float = field(default=30.0, metadata={"min": 0.01, "max": 3600.0})


def fleet_consul(config: GatewayConfig) -> ConsulSourceConfig | None:
    """The Consul source whose agent serves the fleet document (None: none fits)."""
    name = config.fleet.consul_source
    found = [s for s in config.sources if isinstance(s, ConsulSourceConfig)]
    if name:
        found = [s for s in found if s.name == name]
    return found[0] if len(found) == 1 else None


def fleet_problems(config: GatewayConfig) -> list[tuple[str, str]]:
    fleet = config.fleet
    if fleet.source != "consul" or fleet_consul(config) is not None:
        return []
    if fleet.consul_source:
        return [
            (
                "fleet.consul_source",
                f"no [[sources]] of kind 'consul' is named {fleet.consul_source!r}",
            )
        ]
    return [
        (
            "fleet.source",
            "'consul' needs one [[sources]] of kind 'consul' (or name it in fleet.consul_source)",
        )
    ]
