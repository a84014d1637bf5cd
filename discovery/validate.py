"""Input checks for the catalog core: what a source may put into the catalog.

Sources are adapters over untrusted input (mDNS packets from anyone on the link, a Consul agent
answering with whatever it has).  The core re-checks every endpoint so that one buggy or hostile
source cannot break invariants or memory bounds; each check returns a reason (for the log and
``Diff.rejected``) or None.  Limits are documented in README "Discovery".
"""

from __future__ import annotations

from discovery.events import Added, Removed, Resynced, SourceFresh, SourceStale, Updated
from discovery.model import PROTOCOLS, Endpoint, EndpointKey, ServiceName
from foundation.names import label_problem
from foundation.spiffe_id import SpiffeId

MAX_ADDRESS_BYTES = 253
MAX_LOCALITY_BYTES = 255
MAX_METADATA_ITEMS = 128  # Consul allows 64 Service.Meta pairs; sources add a few of their own
MAX_METADATA_BYTES = 64 * 1024  # Consul: 64 x (128 + 512) bytes, plus tags
MAX_SOURCE_NAME_BYTES = 63
MAX_VERSION_BYTES = 256

_EVENT_TYPES = (Added, Updated, Removed, Resynced, SourceStale, SourceFresh)


def source_problem(event: object) -> str | None:
    """Is ``event`` an event with a usable source name and version?"""
    if not isinstance(event, _EVENT_TYPES):
        return f"not a discovery event: {type(event).__name__}"
    source = event.source
    if not isinstance(source, str) or not source or len(source.encode()) > MAX_SOURCE_NAME_BYTES:
        return f"bad source name {source!r:.80}"
    version = getattr(event, "version", "")
    if not isinstance(version, str) or len(version.encode()) > MAX_VERSION_BYTES:
        return f"bad source version {version!r:.80}"
    if isinstance(event, Resynced) and not isinstance(event.endpoints, tuple | list):
        return "Resynced.endpoints is not a sequence"
    if isinstance(event, SourceStale) and not isinstance(event.reason, str):
        return "SourceStale.reason is not a string"
    return None


def _service_problem(service: object) -> str | None:
    if not isinstance(service, ServiceName):
        return "service is not a ServiceName"
    for what, value in (("service", service.name), ("namespace", service.namespace)):
        if not isinstance(value, str):
            return f"{what} is not a string"
        problem = label_problem(value)
        if problem is not None:
            return f"{what}: {problem}"
    return None


def _port_ok(port: object) -> bool:
    return type(port) is int and 1 <= port <= 65535


def _address_problem(address: object) -> str | None:
    if not isinstance(address, str) or not address:
        return "address must be a non-empty string"
    if len(address.encode()) > MAX_ADDRESS_BYTES:
        return f"address longer than {MAX_ADDRESS_BYTES} bytes"
    if not address.isprintable() or " " in address:  # isprintable() rejects other spaces
        return f"address {address!r:.80} has spaces or control characters"
    return None


def key_problem(key: object) -> str | None:
    """Types only: a Removed for a key that could never have been added is a no-op, but it
    must at least be hashable and comparable."""
    if not isinstance(key, EndpointKey):
        return "key is not an EndpointKey"
    if not isinstance(key.service, ServiceName) or not isinstance(key.address, str):
        return "key has wrong field types"
    if type(key.port) is not int:
        return "key port is not an int"
    return None


def endpoint_problem(endpoint: object) -> str | None:
    """Why ``endpoint`` may not enter the catalog, or None."""
    if not isinstance(endpoint, Endpoint):
        return f"not an Endpoint: {type(endpoint).__name__}"
    problem = _service_problem(endpoint.service) or _address_problem(endpoint.address)
    if problem is not None:
        return problem
    if not _port_ok(endpoint.port):
        return f"port {endpoint.port!r:.20} is not in 1..65535"
    if endpoint.protocol not in PROTOCOLS:
        return f"protocol {endpoint.protocol!r:.40} is not one of {', '.join(PROTOCOLS)}"
    if type(endpoint.healthy) is not bool:
        return "healthy is not a bool"
    if type(endpoint.weight) is not int or not 0 <= endpoint.weight <= 65535:
        return f"weight {endpoint.weight!r:.20} is not in 0..65535"
    if endpoint.spiffe_id is not None and not isinstance(endpoint.spiffe_id, SpiffeId):
        return "spiffe_id is not a SpiffeId"
    locality = endpoint.locality
    if not isinstance(locality, str) or len(locality.encode()) > MAX_LOCALITY_BYTES:
        return f"locality is not a string of <= {MAX_LOCALITY_BYTES} bytes"
    return _metadata_problem(endpoint.metadata)


def _metadata_problem(metadata: object) -> str | None:
    if not isinstance(metadata, tuple):
        return "metadata is not a tuple of (key, value) pairs"
    if len(metadata) > MAX_METADATA_ITEMS:
        return f"metadata has {len(metadata)} items (limit {MAX_METADATA_ITEMS})"
    total = 0
    for item in metadata:
        if (
            not isinstance(item, tuple)
            or len(item) != 2
            or not isinstance(item[0], str)
            or not isinstance(item[1], str)
        ):
            return "metadata items must be (str, str) pairs"
        total += len(item[0].encode()) + len(item[1].encode())
    if total > MAX_METADATA_BYTES:
        return f"metadata is {total} bytes (limit {MAX_METADATA_BYTES})"
    return None
