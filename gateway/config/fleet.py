"""``[fleet]``: where a gateway takes its fleet-wide settings from (docs/fleet.md).

The fleet document (``gateway.fleet``) is read from Consul KV under ``prefix``, through the
Consul agent of one of the site's own ``[[sources]]`` of kind ``consul`` (its address, ACL
token, TLS and datacenter): a site that discovers services from Consul already trusts that
agent, and a second set of Consul settings would only drift from the first.

With ``source = "site"`` one site is the authority (``authority_site``): it keeps the document
in ``store_dir`` (current + history), takes writes on its TLS fleet API (``api_address``,
``api_port``) from the SPIFFE IDs in ``writers`` only, and pushes each version over the links
to every peer; the other sites take it from the peer named ``authority_site`` only.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from discovery.sources.config import ConsulSourceConfig
from foundation.names import label_problem
from foundation.spiffe_id import SpiffeId

if TYPE_CHECKING:
    from gateway.config.model import GatewayConfig

_PREFIX = re.compile(r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")


def _prefix(value: str) -> str | None:
    if not _PREFIX.match(value) or any(part in (".", "..") for part in value.split("/")):
        return "must be a KV path like 'isthmus/fleet' (no leading or trailing '/')"
    return None


def _site_name(value: str) -> str | None:
    return None if not value else label_problem(value)


def _address(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    return None


@dataclass(frozen=True)
class FleetConfig:
    # "none": no fleet document (today's way: each site's own file only); "consul": Consul KV;
    # "site": the site named ``authority_site`` pushes it over the links.
    source: Literal["none", "consul", "site"] = "none"
    prefix: str = field(default="isthmus/fleet", metadata={"check": _prefix})
    # The [[sources]] entry (kind "consul") whose agent, token and TLS to use; "" = the only one.
    consul_source: str = ""
    wait_s: float = field(default=60.0, metadata={"min": 1.0, "max": 600.0})
    max_document_bytes: int = field(default=512 * 1024, metadata={"min": 1024, "max": 512 * 1024})
    max_resources: int = field(default=1000, metadata={"min": 1, "max": 10_000})
    backoff_base_s: float = field(default=0.5, metadata={"min": 0.001, "max": 60.0})
    backoff_cap_s: float = field(default=30.0, metadata={"min": 0.01, "max": 3600.0})
    # -- source = "site" ---------------------------------------------------------------------
    # The site that holds the document: this site's own name makes this gateway the authority;
    # another site's name must be a [[peers]] entry (its SPIFFE ID is the only one whose
    # pushes are taken).
    authority_site: str = field(default="", metadata={"check": _site_name})
    # At the authority: the directory of the current document and its history.  At another
    # site: where it keeps the last version it applied, to restart on while the authority is
    # unreachable (unset: it restarts on its own file until the authority pushes).
    store_dir: Path | None = None
    # At the authority: the SPIFFE IDs whose client SVIDs may apply and roll back.
    writers: tuple[SpiffeId, ...] = ()
    # At the authority: the mTLS fleet API (apply, diff, rollback); port 0 picks one.
    api_address: str = field(default="127.0.0.1", metadata={"check": _address})
    api_port: int = field(default=9444, metadata={"min": 0, "max": 65535})
    # How long the authority waits for a site's answer to a pushed version.
    ack_timeout_s: float = field(default=30.0, metadata={"min": 0.1, "max": 3600.0})


def fleet_consul(config: GatewayConfig) -> ConsulSourceConfig | None:
    """The Consul source whose agent serves the fleet document (None: none fits)."""
    name = config.fleet.consul_source
    found = [s for s in config.sources if isinstance(s, ConsulSourceConfig)]
    if name:
        found = [s for s in found if s.name == name]
    return found[0] if len(found) == 1 else None


def is_authority(config: GatewayConfig) -> bool:
    """Whether this gateway is the fleet's control site (``source = "site"``, itself named)."""
    return config.fleet.source == "site" and config.fleet.authority_site == config.site.name


def _site_problems(config: GatewayConfig) -> list[tuple[str, str]]:
    fleet = config.fleet
    out: list[tuple[str, str]] = []
    if fleet.source != "site":
        for name in ("authority_site", "store_dir", "writers"):
            if getattr(fleet, name) not in ("", None, ()):
                out.append((f"fleet.{name}", "only used with source = 'site'"))
        return out
    if not fleet.authority_site:
        return [("fleet.authority_site", "source 'site' needs the name of the authority site")]
    if is_authority(config):
        if fleet.store_dir is None:
            out.append(("fleet.store_dir", "the authority site needs a directory to keep it in"))
        for i, writer in enumerate(fleet.writers):
            if not writer.path:
                out.append((f"fleet.writers[{i}]", "a writer is a workload: it needs a path"))
        return out
    if fleet.authority_site not in {p.name for p in config.peers}:
        out.append(
            ("fleet.authority_site", f"no [[peers]] entry is named {fleet.authority_site!r}")
        )
    if fleet.writers:
        out.append(("fleet.writers", "only used at the authority site"))
    return out


def fleet_problems(config: GatewayConfig) -> list[tuple[str, str]]:
    fleet = config.fleet
    if fleet.source == "site" or fleet.source == "none":
        return _site_problems(config)
    if fleet_consul(config) is not None:
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
