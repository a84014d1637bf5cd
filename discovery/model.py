"""The catalog's frozen value objects: services, endpoints and where each fact came from.

An endpoint's identity is ``(service, address, port)`` (:class:`EndpointKey`): the same
instance reported by two sources is *one* endpoint (see :mod:`discovery.merge` for which
source's attributes win).  Everything here is immutable; a change is a new value.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from foundation.spiffe_id import SpiffeId

Protocol = Literal["http1", "http2", "tcp", "tls"]
PROTOCOLS: tuple[Protocol, ...] = ("http1", "http2", "tcp", "tls")


@dataclass(frozen=True, order=True, slots=True)
class ServiceName:
    """A namespaced service: ``api`` in namespace ``payments`` (both DNS labels)."""

    name: str
    namespace: str = "default"

    def __str__(self) -> str:
        return f"{self.name}.{self.namespace}"


@dataclass(frozen=True, order=True, slots=True)
class EndpointKey:
    """What makes two reports the same endpoint."""

    service: ServiceName
    address: str
    port: int


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One instance of a service, as a source reports it."""

    service: ServiceName
    address: str
    port: int
    protocol: Protocol = "http1"
    healthy: bool = True
    weight: int = 1
    spiffe_id: SpiffeId | None = None
    locality: str = ""
    metadata: tuple[tuple[str, str], ...] = field(default=())

    @property
    def key(self) -> EndpointKey:
        return EndpointKey(self.service, self.address, self.port)


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where an endpoint fact came from and when it was last confirmed.

    ``version`` is the source's own notion of version (Consul's ``X-Consul-Index``, an mDNS
    record's arrival counter, a config generation); ``confirmed_at`` is in the catalog's clock
    (seconds, monotonic, passed in by the caller -- the core never reads a clock).
    """

    source: str
    version: str
    confirmed_at: float
