"""Frozen events that sources emit into the catalog's one channel.

Every event names its ``source`` (the configured source name) and carries ``at``, the time the
source observed it (monotonic seconds from the adapter's clock), and the source ``version``.

* :class:`Added` / :class:`Updated` -- one endpoint appeared or changed;
* :class:`Removed` -- one endpoint left (mDNS goodbye, Consul deregistration);
* :class:`Resynced` -- the source's *complete* current set, replacing everything it said before
  (Consul after each blocking query, static at start);
* :class:`SourceStale` -- the source cannot currently confirm its view (Consul unreachable);
  its endpoints are kept, marked stale, until the source recovers or the grace runs out;
* :class:`SourceFresh` -- the source confirmed its view again without changes.
"""

from __future__ import annotations

from dataclasses import dataclass

from discovery.model import Endpoint, EndpointKey


@dataclass(frozen=True, slots=True)
class Added:
    source: str
    endpoint: Endpoint
    version: str
    at: float


@dataclass(frozen=True, slots=True)
class Updated:
    source: str
    endpoint: Endpoint
    version: str
    at: float


@dataclass(frozen=True, slots=True)
class Removed:
    source: str
    key: EndpointKey
    version: str
    at: float


@dataclass(frozen=True, slots=True)
class Resynced:
    source: str
    endpoints: tuple[Endpoint, ...]
    version: str
    at: float


@dataclass(frozen=True, slots=True)
class SourceStale:
    source: str
    reason: str
    at: float


@dataclass(frozen=True, slots=True)
class SourceFresh:
    source: str
    version: str
    at: float


Event = Added | Updated | Removed | Resynced | SourceStale | SourceFresh
