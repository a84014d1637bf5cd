"""Retries and circuit breakers of one service (``[service_traffic.retries]``,
``[service_traffic.breakers]``): the config schema.

Why a file of its own: these tables hang under ``[[service_traffic]]`` (first matching rule per
service) but are read by the router, not the local cluster, so their shape lives next to the
other sections' without growing :mod:`gateway.config.model`.  The decisions they drive are in
:mod:`gateway.cluster.retry_policy`, :mod:`gateway.cluster.retry_budget` and
:mod:`gateway.cluster.breaker`.

The defaults keep today's behaviour and only add what cannot hurt: a request whose attempt did
no work anywhere (the connect failed, the stream was refused) is tried again at most twice,
inside a budget of 20 % of the service's requests plus 10 retries a second; breakers are wide
enough that only a runaway caller reaches them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: What a failed attempt may be retried on (the names are Envoy's ``retry_on``).
RetryOn = Literal[
    "connect-failure",  # no connection to the endpoint / the link was gone
    "refused-stream",  # the peer or the endpoint refused the stream (REFUSED_STREAM)
    "reset",  # the connection or stream broke, or the attempt timed out, before a head
    "5xx",  # any 5xx head, and every failure above
    "gateway-error",  # a 502, 503 or 504 head (or the gateway's own for a broken attempt)
    "retriable-status-codes",  # a head whose status is in ``retriable_status_codes``
]

DEFAULT_RETRY_ON: tuple[RetryOn, ...] = ("connect-failure", "refused-stream")


def _statuses(value: tuple[int, ...]) -> str | None:
    if any(not 100 <= code <= 599 for code in value) or len(value) > 64:
        return "must be at most 64 status codes, each 100 to 599"
    return None


@dataclass(frozen=True)
class RetryBudgetConfig:
    """How many retries a service may add to its load: at most ``ratio`` of its requests in
    the last ``ttl_s``, plus ``min_per_s`` retries a second (Linkerd's ``retryRatio``,
    ``minRetriesPerSecond``, ``ttl``)."""

    ratio: float = field(default=0.2, metadata={"min": 0.0, "max": 1.0})
    min_per_s: float = field(default=10.0, metadata={"min": 0.0, "max": 100_000.0})
    ttl_s: float = field(default=10.0, metadata={"min": 1.0, "max": 60.0})


@dataclass(frozen=True)
class RetryConfig:
    """When and how a failed request is tried again (``[service_traffic.retries]``)."""

    on: tuple[RetryOn, ...] = DEFAULT_RETRY_ON
    retriable_status_codes: tuple[int, ...] = field(default=(), metadata={"check": _statuses})
    max_retries: int = field(default=2, metadata={"min": 0, "max": 10})
    # Each attempt's bound to the response head (0: only the route's deadline bounds it).
    per_try_timeout_s: float = field(default=0.0, metadata={"min": 0.0, "max": 3600.0})
    # Full-jitter exponential backoff: the n-th retry waits uniform(0, min(max, base * 2^n)).
    backoff_base_s: float = field(default=0.025, metadata={"min": 0.0, "max": 60.0})
    backoff_max_s: float = field(default=0.25, metadata={"min": 0.0, "max": 600.0})
    # A request body is kept (for a replay) up to this size; a larger one is not retried.
    max_body_bytes: int = field(default=64 * 1024, metadata={"min": 0, "max": 16 * 1024 * 1024})
    budget: RetryBudgetConfig = field(default_factory=RetryBudgetConfig)

    def problems(self) -> list[tuple[str, str]]:
        out: list[tuple[str, str]] = []
        if self.backoff_max_s < self.backoff_base_s:
            out.append(("backoff_max_s", "must be at least backoff_base_s"))
        if "retriable-status-codes" in self.on and not self.retriable_status_codes:
            out.append(("retriable_status_codes", 'must list codes for "retriable-status-codes"'))
        return out


@dataclass(frozen=True)
class BreakerConfig:
    """Circuit breakers of one service per site (``[service_traffic.breakers]``): the most
    this gateway has in flight to it at once.  Over a limit: an immediate 503 naming it."""

    # L4 tunnels and WebSocket flows open to the service in one site.
    max_connections: int = field(default=10_000, metadata={"min": 1, "max": 1_000_000})
    # HTTP requests sent and waiting for their response head.
    max_pending_requests: int = field(default=10_000, metadata={"min": 1, "max": 1_000_000})
    # HTTP requests in flight, head and body.
    max_requests: int = field(default=10_000, metadata={"min": 1, "max": 1_000_000})
    # Retries in flight (a retry over it is not made; the failure stands).
    max_retries: int = field(default=1_000, metadata={"min": 0, "max": 1_000_000})
