"""The pure half of gateway discovery through Consul: what a gateway registers, what a peer
reads back, and which replicas a site has.

Why Meta is checked but never trusted: anyone with write access to the Consul catalog can
register an ``isthmus-gateway`` instance.  What it may claim only decides *where to dial*;
the link's mTLS handshake still demands the peer's configured ``spiffe_id`` (the
``isthmus-spiffe-id`` Meta value is compared with it to skip obvious misconfigurations, never
used as the expected identity).  An instance with unusable Meta is skipped alone, with a
reason; an answer not of Consul's documented shape is refused whole
(:class:`~discovery.sources.consul_parse.ConsulMalformedResponse`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from discovery.sources.consul_parse import ConsulMalformedResponse, format_wait
from foundation.names import label_problem
from foundation.spiffe_id import SpiffeId, SpiffeIdError
from gateway.config.replicas import MAX_REPLICAS, host_port

SERVICE = "isthmus-gateway"
META_SITE = "isthmus-site"
META_EAST_WEST = "isthmus-east-west"
META_SPIFFE_ID = "isthmus-spiffe-id"
#: Bounds on an answer: instances read (all sites), and the length of a Meta value used.
MAX_INSTANCES = 4096
_MAX_META = 512
_ID_CHARS = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True, slots=True)
class GatewayInstance:
    """One registered gateway as a peer reads it: its site, where to dial it, what it claims."""

    service_id: str
    site: str
    host: str
    port: int
    spiffe_id: SpiffeId

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def east_west(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def service_id(site: str, host: str, port: int) -> str:
    """The registration's ID: unique per agent for every gateway of every site."""
    return _ID_CHARS.sub("-", f"{SERVICE}-{site}-{host}-{port}")


def check_id(sid: str) -> str:
    """The TTL check's ID (Consul's own name for a service's check)."""
    return f"service:{sid}"


def registration(
    *,
    site: str,
    spiffe_id: SpiffeId,
    host: str,
    port: int,
    ttl_s: float,
    deregister_after_s: float = 0.0,
) -> dict[str, Any]:
    """The body of ``PUT /v1/agent/service/register`` for this gateway, with its TTL check
    (passing at once: the gateway registers only once its east-west listener is up)."""
    sid = service_id(site, host, port)
    check: dict[str, Any] = {
        "CheckID": check_id(sid),
        "Name": "isthmus gateway heartbeat",
        "TTL": format_wait(ttl_s),
        "Status": "passing",
    }
    if deregister_after_s > 0:
        check["DeregisterCriticalServiceAfter"] = format_wait(deregister_after_s)
    return {
        "ID": sid,
        "Name": SERVICE,
        "Address": host,
        "Port": port,
        "Meta": {
            META_SITE: site,
            META_EAST_WEST: east_west(host, port),
            META_SPIFFE_ID: str(spiffe_id),
        },
        "Check": check,
    }


def _instance(entry: Any, i: int) -> GatewayInstance | str:
    """One ``/v1/health/service`` entry as an instance, or why it is skipped."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("Service"), Mapping):
        raise ConsulMalformedResponse(f"[{i}]: not an entry with a Service object")
    service = entry["Service"]
    sid = service.get("ID")
    meta = service.get("Meta") or {}
    if not isinstance(sid, str) or not isinstance(meta, Mapping):
        raise ConsulMalformedResponse(f"[{i}].Service: ID or Meta of the wrong type")
    values = {k: meta.get(k) for k in (META_SITE, META_EAST_WEST, META_SPIFFE_ID)}
    for key, value in values.items():
        if not isinstance(value, str) or not value or len(value) > _MAX_META:
            return f"{sid[:80]!r}: Meta {key} missing or not a short string"
    site, ew, sid_text = (str(v) for v in values.values())
    problem = label_problem(site)
    if problem:
        return f"{sid[:80]!r}: Meta {META_SITE}: {problem}"
    try:
        host, port = host_port(ew)
    except ValueError as exc:
        return f"{sid[:80]!r}: Meta {META_EAST_WEST}: {exc}"
    try:
        spiffe = SpiffeId.parse(sid_text)
    except SpiffeIdError as exc:
        return f"{sid[:80]!r}: Meta {META_SPIFFE_ID}: {exc}"
    return GatewayInstance(sid, site, host, port, spiffe)


def parse_instances(data: object) -> tuple[tuple[GatewayInstance, ...], tuple[str, ...]]:
    """The gateways of a ``GET /v1/health/service/isthmus-gateway?passing`` answer, and the
    reasons for the instances skipped."""
    if not isinstance(data, list):
        raise ConsulMalformedResponse("not a list of entries")
    found: list[GatewayInstance] = []
    skipped: list[str] = []
    for i, entry in enumerate(data[:MAX_INSTANCES]):
        got = _instance(entry, i)
        if isinstance(got, str):
            skipped.append(got)
        else:
            found.append(got)
    if len(data) > MAX_INSTANCES:
        skipped.append(f"{len(data) - MAX_INSTANCES} instances past the first {MAX_INSTANCES}")
    return tuple(found), tuple(skipped)


def site_replicas(
    instances: Iterable[GatewayInstance],
    *,
    site: str,
    spiffe_id: SpiffeId,
    static: Sequence[tuple[str, int]] = (),
) -> tuple[tuple[tuple[str, int], ...], tuple[str, ...]]:
    """Site ``site``'s replicas: the static ones, then the discovered ones (sorted, no
    repeats, at most :data:`MAX_REPLICAS` in all), and the reasons for those left out.  An
    instance claiming another SPIFFE ID than the peer's configured one is left out (it could
    never pass the link's check)."""
    out = list(dict.fromkeys(static))
    skipped: list[str] = []
    found: set[tuple[str, int]] = set()
    for inst in instances:
        if inst.site != site:
            continue
        if inst.spiffe_id != spiffe_id:
            skipped.append(f"{inst.service_id[:80]!r}: claims {inst.spiffe_id}, not {spiffe_id}")
            continue
        found.add((inst.host, inst.port))
    for hp in sorted(found - set(out)):
        if len(out) >= MAX_REPLICAS:
            skipped.append(f"{east_west(*hp)}: more than {MAX_REPLICAS} replicas")
            continue
        out.append(hp)
    return tuple(out), tuple(skipped)


def replica_diff(
    old: Iterable[tuple[str, int]], new: Iterable[tuple[str, int]]
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The replicas added and removed between two sets, as sorted ``host:port`` strings."""
    before, after = set(old), set(new)
    return (
        tuple(sorted(east_west(*hp) for hp in after - before)),
        tuple(sorted(east_west(*hp) for hp in before - after)),
    )
