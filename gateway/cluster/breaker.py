"""Circuit breakers per service and site: caps on what this gateway has in flight (pure).

Why: a slow or stuck service in one site ties up whatever the gateway sends it -- tunnels,
requests waiting for a head, retries -- until nothing is left for the services that work.
Envoy's answer is a set of counters per upstream cluster with a ceiling each; over one, the
request is refused at once (503, ``x-envoy-overloaded``) instead of queueing.  Here a cluster
is a service in one site, and the four ceilings are those of ``[service_traffic.breakers]``:

==========================  ====================================================
``max_connections``         L4 tunnels and WebSocket flows open to it
``max_pending_requests``    HTTP requests sent, waiting for their response head
``max_requests``            HTTP requests in flight (head and body)
``max_retries``             retries in flight (over it, the retry is not made)
==========================  ====================================================

Theory of operation
-------------------
:class:`Breakers` holds one :class:`Counts` per (service, site) while anything is in flight
(an entry whose counts all reach zero is dropped, so memory follows the load, not the
catalog).  :meth:`Breakers.admit` checks a ceiling and counts one in, or raises
:class:`BreakerOpen`; the adapter calls :meth:`Breakers.release` exactly once per admit (a
``finally``).  Nothing here awaits, so a check and its count cannot be split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from discovery.model import ServiceName
from foundation.errors import H2_REFUSED_STREAM, UpstreamError
from gateway.config.resilience import BreakerConfig

Kind = Literal["connections", "pending_requests", "requests", "retries"]
KINDS: tuple[Kind, ...] = ("connections", "pending_requests", "requests", "retries")


class BreakerOpen(UpstreamError):
    """A circuit breaker is full: refused at once, without calling the service (503).

    ``breaker`` is the ceiling that was reached (``max_requests``...); the message names it,
    the service and the site, so the caller can tell overload from a failing service.
    """

    http_status = 503
    h2_error_code = H2_REFUSED_STREAM

    def __init__(self, breaker: str, service: ServiceName, site: str, limit: int) -> None:
        super().__init__(
            f"circuit breaker {breaker} of {service} in site {site} is full "
            f"({limit} in flight): refused without calling it"
        )
        self.breaker = breaker
        self.site = site


@dataclass(slots=True)
class Counts:
    """What is in flight to one service in one site."""

    connections: int = 0
    pending_requests: int = 0
    requests: int = 0
    retries: int = 0

    def empty(self) -> bool:
        return not (self.connections or self.pending_requests or self.requests or self.retries)


def _limit(config: BreakerConfig, kind: Kind) -> int:
    if kind == "connections":
        return config.max_connections
    if kind == "pending_requests":
        return config.max_pending_requests
    if kind == "requests":
        return config.max_requests
    return config.max_retries


class Breakers:
    """The counters of every (service, site) with something in flight."""

    __slots__ = ("_counts",)

    def __init__(self) -> None:
        # Keyed by plain strings: their hashes are cached, a ServiceName's is computed anew.
        self._counts: dict[tuple[str, str, str], Counts] = {}

    def room(self, config: BreakerConfig, service: ServiceName, site: str, kind: Kind) -> bool:
        """Whether one more ``kind`` fits (nothing counted)."""
        counts = self._counts.get((service.name, service.namespace, site))
        used = 0 if counts is None else getattr(counts, kind)
        return bool(used < _limit(config, kind))

    def admit(self, config: BreakerConfig, service: ServiceName, site: str, kind: Kind) -> None:
        """Count one ``kind`` in, or raise :class:`BreakerOpen` when its ceiling is reached."""
        limit = _limit(config, kind)
        key = (service.name, service.namespace, site)
        counts = self._counts.get(key)
        if counts is None:
            counts = self._counts[key] = Counts()
        used: int = getattr(counts, kind)
        if used >= limit:
            if counts.empty():
                del self._counts[key]
            raise BreakerOpen(f"max_{kind}", service, site, limit)
        setattr(counts, kind, used + 1)

    def release(self, service: ServiceName, site: str, kind: Kind) -> None:
        """Count one ``kind`` out (once per :meth:`admit` that did not raise)."""
        key = (service.name, service.namespace, site)
        counts = self._counts.get(key)
        if counts is None:
            return
        setattr(counts, kind, max(0, getattr(counts, kind) - 1))
        if counts.empty():
            del self._counts[key]

    def in_flight(self, service: ServiceName, site: str) -> Counts:
        """A copy of the counts of ``service`` in ``site`` (zeros when nothing is in flight)."""
        counts = self._counts.get((service.name, service.namespace, site))
        return Counts() if counts is None else Counts(**{k: getattr(counts, k) for k in KINDS})
