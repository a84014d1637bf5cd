"""``[consul_gateways]``: gateways find each other's replicas through Consul (docs/replicas.md).

Each gateway may register itself in Consul as service ``isthmus-gateway`` (``register``), with
a TTL check it keeps passing; peers whose ``[[peers]]`` entry says ``discover = "consul"``
watch that service and link to every passing replica of the site.  Both go through the
Consul agent of one of the site's own ``[[sources]]`` of kind ``consul`` (its address, ACL
token, TLS and datacenter), as ``[fleet] source = "consul"`` does: one set of Consul settings.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from discovery.sources.config import ConsulSourceConfig

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig


def _host(value: str) -> str | None:
    if not value:
        return None
    try:
        ip = ipaddress.ip_address(value)
    except ValueError:
        if any(c.isspace() or c in "[]:/" for c in value):
            return f"{value!r} is not a host name or IP address"
        return None
    return "a wildcard address cannot be dialed" if ip.is_unspecified else None


@dataclass(frozen=True)
class ConsulGatewaysConfig:
    # Register this gateway as service ``isthmus-gateway`` (with a TTL check) at start;
    # deregister it on shutdown.
    register: bool = False
    # The [[sources]] entry (kind "consul") whose agent, token and TLS to use; "" = the only one.
    consul_source: str = ""
    # The east-west address peers dial, as registered; "" = the east-west listener's address.
    address: str = field(default="", metadata={"check": _host})
    # The TTL of the registered check; the gateway passes it every ttl_s / 3.
    ttl_s: float = field(default=15.0, metadata={"min": 1.0, "max": 3600.0})
    # Consul removes a registration whose check stayed critical this long (0: never).
    deregister_critical_after_s: float = field(default=0.0, metadata={"min": 0.0, "max": 86400.0})
    # The blocking-query wait of the watch on ``isthmus-gateway``.
    wait_s: float = field(default=60.0, metadata={"min": 1.0, "max": 600.0})
    backoff_base_s: float = field(default=0.5, metadata={"min": 0.001, "max": 60.0})
    backoff_cap_s: float = field(default=30.0, metadata={"min": 0.01, "max": 3600.0})


def uses_consul(config: GatewayConfig) -> bool:
    """Whether this gateway registers itself or discovers a peer's replicas in Consul."""
    return config.consul_gateways.register or any(p.discover == "consul" for p in config.peers)


def gateways_consul(config: GatewayConfig) -> ConsulSourceConfig | None:
    """The Consul source whose agent registers and lists the gateways (None: none fits)."""
    name = config.consul_gateways.consul_source
    found = [s for s in config.sources if isinstance(s, ConsulSourceConfig)]
    if name:
        found = [s for s in found if s.name == name]
    return found[0] if len(found) == 1 else None


def consul_gateways_problems(config: GatewayConfig) -> list[tuple[str, str]]:
    section = config.consul_gateways
    out: list[tuple[str, str]] = []
    ew = config.listener("east-west")
    if section.register and ew is None:
        out.append(("consul_gateways.register", "needs an east-west listener to register"))
    elif section.register and not section.address and ew is not None and ew.address.is_unspecified:
        why = "the east-west listener is on a wildcard address: give the address peers dial"
        out.append(("consul_gateways.address", why))
    if not uses_consul(config) or gateways_consul(config) is not None:
        return out
    if section.consul_source:
        why = f"no [[sources]] of kind 'consul' is named {section.consul_source!r}"
        return [*out, ("consul_gateways.consul_source", why)]
    where = "consul_gateways.register" if section.register else "peers"
    why = "Consul needs one [[sources]] of kind 'consul' (or consul_gateways.consul_source)"
    return [*out, (where, why)]


def consul_gateways_restart(old: GatewayConfig, new: GatewayConfig) -> list[tuple[str, str]]:
    """What a reload cannot change live here: the watch of ``isthmus-gateway`` runs only when
    the gateway started with a discovering peer, and both tasks keep the Consul agent (address,
    token, TLS) they started with.  (``[consul_gateways]`` itself is restart-only as a whole.)"""
    watching = any(p.discover == "consul" for p in old.peers)
    if not watching and any(p.discover == "consul" for p in new.peers):
        why = "discover = 'consul' on a gateway started without it needs a restart"
        return [("peers", why)]
    if uses_consul(old) and gateways_consul(old) != gateways_consul(new):
        why = "the Consul source used by [consul_gateways] changed: restart the gateway"
        return [("sources", why)]
    return []
