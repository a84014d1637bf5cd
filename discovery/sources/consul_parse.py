"""The pure half of the Consul source: Consul's JSON in, the catalog's endpoints out.

Nothing here does I/O or imports trio; every function takes plain values and either returns a
frozen result or raises a typed :class:`ConsulError`.  The trio adapter
(:mod:`discovery.sources.consul`) only moves bytes and time around these decisions.

What is checked, and why so strictly
------------------------------------
Consul's answers feed routing.  A response that does not have the documented shape (not JSON,
a string where a number belongs, a missing ``Service`` object, a port of 70 000) means that
the agent, a proxy in between, or the network is broken, so the *whole* response is refused
with :class:`ConsulMalformedResponse`: applying half of a broken answer could remove healthy
endpoints.  The source logs it, keeps its last good view (marked stale) and retries.

Values that are well-formed but unusable *by Isthmus* are skipped one instance at a time and
reported in :attr:`HealthReport.skipped`: a service registered without a port (``Port: 0``,
legal in Consul), an address that is neither an IP nor a host name, an unknown
``isthmus-protocol``, an invalid ``isthmus-spiffe-id``.  A service whose name is not a DNS
label (``Web_API``) cannot appear in an L7 address, so it is skipped as a whole
(:func:`select_services`).

Mapping of one ``/v1/health/service/<name>`` entry to an :class:`Endpoint`
---------------------------------------------------------------------------
* address: ``Service.Address``, or ``Node.Address`` when empty (Consul's documented rule);
* port: ``Service.Port``;
* health: *all* instances are listed; ``healthy`` is false when any check is ``critical`` or
  ``maintenance`` (Consul's ``?passing`` filter would hide them, but the catalog wants to show
  them, unroutable).  Weight is ``Weights.Passing``, or ``Weights.Warning`` when a check
  warns -- Consul's own DNS rule; an effective weight of 0 makes the endpoint unhealthy;
* protocol / SPIFFE ID: ``Service.Meta["isthmus-protocol"]`` (``http1`` when absent) and
  ``Service.Meta["isthmus-spiffe-id"]``;
* locality: ``Node.Datacenter``;
* metadata: ``Service.Meta`` plus ``consul-node``, ``consul-service-id`` and ``consul-tags``;
* two instances with the same (service, address, port) are one endpoint; a healthy report wins.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import cast

from discovery.model import PROTOCOLS, Endpoint, ServiceName
from foundation.errors import ConfigError, DiscoveryError
from foundation.names import label_problem
from foundation.spiffe_id import SpiffeId, SpiffeIdError

META_PROTOCOL = "isthmus-protocol"
META_SPIFFE_ID = "isthmus-spiffe-id"
CHECK_STATUSES = ("passing", "warning", "critical", "maintenance")
#: Registrations that are no routable service: Consul's own servers, and the gateways
#: themselves (``isthmus-gateway``: their east-west port takes links, not requests).
NOT_SERVICES = frozenset({"consul", "isthmus-gateway"})
MAX_WEIGHT = 65535
# Consul indexes are unsigned 64-bit Raft indexes.
MAX_INDEX = 2**64 - 1


# -- errors --------------------------------------------------------------------------------------
class ConsulError(DiscoveryError):
    """Root of everything the Consul source can fail with."""


class ConsulUnavailable(ConsulError):
    """The agent could not be reached, hung up, or answered 5xx: its view is unknown."""


class ConsulTimeout(ConsulUnavailable):
    """A request outlived its deadline (``wait`` + Consul's jitter + a margin)."""


class ConsulAclDenied(ConsulError):
    """403: the ACL token is missing, unknown (``ACL not found``) or lacks permission."""

    http_status = 503


class ConsulHttpError(ConsulError):
    """Any other non-2xx answer (400, 404 on a read, ...)."""


class ConsulMalformedResponse(ConsulError):
    """The answer is not what HashiCorp documents: bad JSON, wrong types, missing fields."""


class ConsulResponseTooLarge(ConsulMalformedResponse):
    """The response body exceeded the configured bound; it was not read to the end."""


class ConsulConfigError(ConfigError):
    """The Consul source's configuration cannot be used (bad node-meta filter, bad address)."""


# -- small strict readers ------------------------------------------------------------------------
def _where(path: str, message: str) -> ConsulMalformedResponse:
    return ConsulMalformedResponse(f"{path}: {message}")


def _tname(value: object) -> str:
    return "null" if value is None else type(value).__name__


def _obj(value: object, path: str) -> Mapping[str, object]:
    if not isinstance(value, dict):
        raise _where(path, f"expected an object, got {_tname(value)}")
    return cast(Mapping[str, object], value)


def _field(obj: Mapping[str, object], key: str, path: str) -> object:
    if key not in obj:
        raise _where(path, f"missing field {key!r}")
    return obj[key]


def _str(value: object, path: str) -> str:
    if not isinstance(value, str):
        raise _where(path, f"expected a string, got {_tname(value)}")
    return value


def _int(value: object, path: str) -> int:
    # JSON true/false decode to bool, which is an int subclass in Python: refuse it.
    if isinstance(value, bool) or not isinstance(value, int):
        raise _where(path, f"expected an integer, got {_tname(value)}")
    return value


def _opt_str(obj: Mapping[str, object], key: str, path: str) -> str:
    value = obj.get(key)
    return "" if value is None else _str(value, f"{path}.{key}")


def _str_list(value: object, path: str) -> tuple[str, ...]:
    """A JSON array of strings; Consul sends ``null`` for an empty one."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _where(path, f"expected an array of strings, got {_tname(value)}")
    return tuple(_str(item, f"{path}[{i}]") for i, item in enumerate(value))


def _str_map(value: object, path: str) -> dict[str, str]:
    """A JSON object of strings (``Meta``); Consul sends ``null`` for an empty one."""
    if value is None:
        return {}
    obj = _obj(value, path)
    return {key: _str(item, f"{path}.{key}") for key, item in obj.items()}


# -- index and wait ------------------------------------------------------------------------------
def parse_index(raw: str | None) -> int:
    """The ``X-Consul-Index`` header as an integer; absent or not a decimal -> malformed."""
    if raw is None:
        raise ConsulMalformedResponse("missing X-Consul-Index header")
    text = raw.strip()
    if not text.isascii() or not text.isdigit() or len(text) > 20:
        raise ConsulMalformedResponse(f"X-Consul-Index is not an unsigned integer: {raw[:40]!r}")
    value = int(text)
    if value > MAX_INDEX:
        raise ConsulMalformedResponse(f"X-Consul-Index out of range: {raw[:40]!r}")
    return value


def next_index(previous: int, received: int) -> int:
    """The index to send with the next blocking query (HashiCorp, "Blocking Queries").

    * *Reset the index if it goes backwards*: a snapshot restore or a re-created agent makes
      the index smaller than the one we hold; waiting for the old value would block until the
      cluster catches up (possibly forever), so restart from 0 -- a non-blocking full read.
    * *Sanity check index is greater than zero*: an index of 0 (or less) would make every
      following query return at once, a busy loop; HashiCorp recommends treating it as 1.
    """
    if received < previous:
        return 0
    if received <= 0:
        return 1
    return received


def format_wait(seconds: float) -> str:
    """A Go duration for the ``wait`` parameter, in whole milliseconds (``"60000ms"``)."""
    return f"{max(1, round(seconds * 1000))}ms"


def request_deadline(wait_s: float, margin_s: float) -> float:
    """How long one blocking query may take: ``wait`` + Consul's jitter (wait/16) + margin."""
    return wait_s + wait_s / 16 + margin_s


# -- filters from config -------------------------------------------------------------------------
def parse_node_meta(items: tuple[str, ...]) -> tuple[tuple[str, str], ...]:
    """``"key:value"`` strings (config ``node_meta``) into pairs, as Consul's ``node-meta``."""
    pairs: list[tuple[str, str]] = []
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise ConsulConfigError(f"node_meta entry {item!r} is not of the form 'key:value'")
        pairs.append((key, value))
    return tuple(pairs)


# -- /v1/catalog/services ------------------------------------------------------------------------
def parse_catalog_services(data: object) -> dict[str, tuple[str, ...]]:
    """``{"name": ["tag", ...], ...}`` -> name -> tags (tags may be ``null``)."""
    obj = _obj(data, "catalog/services")
    return {name: _str_list(tags, f"catalog/services.{name}") for name, tags in obj.items()}


@dataclass(frozen=True, slots=True)
class Selection:
    """Which Consul services to watch, and which were skipped (with the reason)."""

    watch: tuple[str, ...]
    skipped: tuple[tuple[str, str], ...]


def select_services(
    catalog: Mapping[str, tuple[str, ...]], *, wanted: tuple[str, ...], tags: tuple[str, ...]
) -> Selection:
    """Services to watch: the configured list (or all but :data:`NOT_SERVICES`), tag-filtered.

    ``/v1/catalog/services`` lists the union of each service's tags, so a service lacking a
    required tag here has no instance carrying it and needs no query.  Names that are not DNS
    labels once lower-cased are skipped: they could never be addressed.
    """
    watch: list[str] = []
    skipped: list[tuple[str, str]] = []
    for name in sorted(catalog):
        if wanted and name not in wanted:
            continue
        if not wanted and name in NOT_SERVICES:
            continue  # Consul's servers (RPC port 8300), gateways' east-west ports: not services
        if not set(tags) <= set(catalog[name]):
            continue
        problem = label_problem(name.lower())
        if problem is not None:
            skipped.append((name, f"service name {problem}"))
            continue
        watch.append(name)
    return Selection(tuple(watch), tuple(skipped))


# -- /v1/health/service/<name> -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class HealthReport:
    """The usable endpoints of one service, and the instances skipped with the reason."""

    endpoints: tuple[Endpoint, ...]
    skipped: tuple[str, ...]
    # fingerprint -> endpoint of every usable instance: pass it back as ``known`` next time
    fingerprints: Mapping[Fingerprint, Endpoint] = field(default_factory=dict)


Fingerprint = tuple[str | int, ...]
"""An instance's state in Consul's own terms: node name and ``ModifyIndex``, service ID and
``ModifyIndex``, each check's ID, status and ``ModifyIndex``.  Consul raises a ``ModifyIndex``
with every change of what it indexes, so an equal fingerprint means an unchanged instance."""


def _fingerprint(entry: object) -> Fingerprint | None:
    """The entry's fingerprint, or None when it lacks one (then it is parsed in full)."""
    if not isinstance(entry, dict):
        return None
    node, svc, checks = entry.get("Node"), entry.get("Service"), entry.get("Checks")
    if not (isinstance(node, dict) and isinstance(svc, dict) and isinstance(checks, list)):
        return None
    parts = [node.get("Node"), node.get("ModifyIndex"), svc.get("ID"), svc.get("ModifyIndex")]
    for check in checks:
        if not isinstance(check, dict):
            return None
        parts += (check.get("CheckID"), check.get("Status"), check.get("ModifyIndex"))
    if not all(type(p) is str or type(p) is int for p in parts):
        return None
    return tuple(parts)  # type: ignore[arg-type]


class _Skip(Exception):
    """Internal: this instance is well-formed but unusable; skip it, keep the others."""


_HOSTNAME = re.compile(r"^(?=.{1,253}$)([A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?\.?)+$")


def _usable_address(address: str) -> bool:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return bool(_HOSTNAME.match(address)) and not address.replace(".", "").isdigit()
    return True


def _health(checks: object, path: str) -> tuple[bool, bool]:
    """(any critical/maintenance, any warning) over the instance's checks."""
    if checks is None:
        return False, False
    if not isinstance(checks, list):
        raise _where(path, f"expected an array, got {_tname(checks)}")
    statuses = []
    for i, check in enumerate(checks):
        status = _str(_field(_obj(check, f"{path}[{i}]"), "Status", f"{path}[{i}]"), "Status")
        if status not in CHECK_STATUSES:
            raise _where(f"{path}[{i}].Status", f"unknown check status {status[:40]!r}")
        statuses.append(status)
    bad = any(s in ("critical", "maintenance") for s in statuses)
    return bad, "warning" in statuses


def _weights(value: object, path: str) -> tuple[int, int]:
    if value is None:
        return 1, 1
    obj = _obj(value, path)
    passing = _int(_field(obj, "Passing", path), f"{path}.Passing")
    warning = _int(_field(obj, "Warning", path), f"{path}.Warning")
    for name, weight in (("Passing", passing), ("Warning", warning)):
        if not 0 <= weight <= 2**31 - 1:
            raise _where(f"{path}.{name}", f"weight {weight} out of range")
    return passing, warning


def _instance(
    entry: object,
    path: str,
    *,
    service: str,
    namespace: str,
    tags: tuple[str, ...],
    node_meta: tuple[tuple[str, str], ...],
) -> Endpoint | None:
    """One entry -> an endpoint, ``None`` when filtered out, :class:`_Skip` when unusable."""
    obj = _obj(entry, path)
    node = _obj(_field(obj, "Node", path), f"{path}.Node")
    svc = _obj(_field(obj, "Service", path), f"{path}.Service")
    checks = _field(obj, "Checks", path)

    node_name = _str(_field(node, "Node", f"{path}.Node"), f"{path}.Node.Node")
    node_address = _str(_field(node, "Address", f"{path}.Node"), f"{path}.Node.Address")
    datacenter = _opt_str(node, "Datacenter", f"{path}.Node")
    meta_of_node = _str_map(node.get("Meta"), f"{path}.Node.Meta")

    service_id = _str(_field(svc, "ID", f"{path}.Service"), f"{path}.Service.ID")
    name = _str(_field(svc, "Service", f"{path}.Service"), f"{path}.Service.Service")
    if name.lower() != service.lower():
        raise _where(f"{path}.Service.Service", f"{name[:80]!r} is not the service {service!r}")
    instance_tags = _str_list(svc.get("Tags"), f"{path}.Service.Tags")
    address = _opt_str(svc, "Address", f"{path}.Service") or node_address
    port = _int(_field(svc, "Port", f"{path}.Service"), f"{path}.Service.Port")
    if not 0 <= port <= 65535:
        raise _where(f"{path}.Service.Port", f"port {port} out of range")
    meta = _str_map(svc.get("Meta"), f"{path}.Service.Meta")
    passing_weight, warning_weight = _weights(svc.get("Weights"), f"{path}.Service.Weights")
    critical, warning = _health(checks, f"{path}.Checks")

    # Filters the agent should already have applied; checked again so that a filter is a
    # property of this source, not a hope about the server.
    if not set(tags) <= set(instance_tags):
        return None
    if any(meta_of_node.get(key) != value for key, value in node_meta):
        return None

    label = f"{service}/{service_id} on {node_name}"
    if port == 0:
        raise _Skip(f"{label}: registered without a port")
    if not _usable_address(address):
        raise _Skip(f"{label}: unusable address {address[:80]!r}")
    protocol_text = meta.get(META_PROTOCOL, "http1")
    if protocol_text not in PROTOCOLS:
        raise _Skip(f"{label}: unknown {META_PROTOCOL} {protocol_text[:40]!r}")
    spiffe_id = None
    if META_SPIFFE_ID in meta:
        try:
            spiffe_id = SpiffeId.parse(meta[META_SPIFFE_ID])
        except SpiffeIdError as err:
            raise _Skip(f"{label}: invalid {META_SPIFFE_ID}: {err}") from err

    weight = warning_weight if warning else passing_weight
    metadata = {
        **meta,
        "consul-node": node_name,
        "consul-service-id": service_id,
        "consul-tags": ",".join(instance_tags),
    }
    return Endpoint(
        service=ServiceName(service.lower(), namespace),
        address=address,
        port=port,
        protocol=protocol_text,
        healthy=not critical and weight > 0,
        weight=min(max(weight, 1), MAX_WEIGHT),
        spiffe_id=spiffe_id,
        locality=datacenter,
        metadata=tuple(sorted(metadata.items())),
    )


def parse_health_service(
    data: object,
    *,
    service: str,
    namespace: str,
    tags: tuple[str, ...] = (),
    node_meta: tuple[tuple[str, str], ...] = (),
    known: Mapping[Fingerprint, Endpoint] | None = None,
) -> HealthReport:
    """A ``/v1/health/service/<service>`` body -> the service's endpoints (see module doc).

    ``known``: the ``fingerprints`` of the previous report of the same query.  An instance whose
    fingerprint is known is not parsed again: its endpoint is reused.  At 100k endpoints a
    blocking query answers hundreds of instances of which one or two changed, and parsing
    every one again was most of the source's CPU time and the longest steps of the event loop.
    """
    path = f"health/service/{service}"
    if not isinstance(data, list):
        raise _where(path, f"expected an array, got {_tname(data)}")
    found: dict[tuple[str, int], Endpoint] = {}
    skipped: list[str] = []
    fingerprints: dict[Fingerprint, Endpoint] = {}
    for i, entry in enumerate(data):
        fingerprint = _fingerprint(entry)
        endpoint = None
        if known is not None and fingerprint is not None:
            endpoint = known.get(fingerprint)
        if endpoint is None:
            try:
                endpoint = _instance(
                    entry,
                    f"{path}[{i}]",
                    service=service,
                    namespace=namespace,
                    tags=tags,
                    node_meta=node_meta,
                )
            except _Skip as skip:
                skipped.append(str(skip))
                continue
            if endpoint is None:
                continue
        if fingerprint is not None:
            fingerprints[fingerprint] = endpoint
        key = (endpoint.address, endpoint.port)
        if key not in found or (endpoint.healthy and not found[key].healthy):
            found[key] = endpoint
    endpoints = tuple(found[key] for key in sorted(found))
    return HealthReport(endpoints, tuple(skipped), fingerprints)
