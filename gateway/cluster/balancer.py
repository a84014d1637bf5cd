"""Which balancer a service uses (``[[service_traffic]] lb``) and the request's hash key.

Why here: the choice is configuration, resolved once per service; the hash key is read from
the request head only when the service balances by it, so other services pay nothing.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from discovery.model import ServiceName
from gateway.config.model import ServiceTrafficConfig
from gateway.http.exchange import Request

Kind = Literal["weighted_round_robin", "least_request", "ring_hash"]
WILDCARD = "*"
#: At most this much of a header or cookie value is hashed (a bound, not a semantic limit).
MAX_KEY_BYTES = 4096


@dataclass(frozen=True, slots=True)
class BalancerChoice:
    kind: Kind = "weighted_round_robin"
    hash_header: bytes | None = None  # lowercase field name
    hash_cookie: bytes | None = None


DEFAULT = BalancerChoice()
BalancerFor = Callable[[ServiceName], BalancerChoice]


def default_balancer(_service: ServiceName) -> BalancerChoice:
    return DEFAULT


def balancer_resolver(rules: Sequence[ServiceTrafficConfig]) -> BalancerFor:
    """Each service's balancer: the first matching ``[[service_traffic]]`` rule's ``lb``."""
    rules = tuple(rules)

    @functools.lru_cache(maxsize=4096)
    def balancer_for(service: ServiceName) -> BalancerChoice:
        for r in rules:
            if r.service in (WILDCARD, service.name) and r.namespace in (
                WILDCARD,
                service.namespace,
            ):
                return BalancerChoice(
                    r.lb,
                    None if r.hash_header is None else r.hash_header.lower().encode("ascii"),
                    None if r.hash_cookie is None else r.hash_cookie.encode("ascii"),
                )
        return DEFAULT

    return balancer_for


def hash_key(request: Request, choice: BalancerChoice) -> bytes | None:
    """The request's value to hash (a header's, or a cookie's), or None when it has none."""
    if choice.hash_header is not None:
        for name, value in request.headers:
            if name == choice.hash_header:
                return value[:MAX_KEY_BYTES]
        return None
    if choice.hash_cookie is not None:
        prefix = choice.hash_cookie + b"="
        for name, value in request.headers:
            if name != b"cookie":
                continue
            for part in value.split(b";"):
                part = part.strip()
                if part.startswith(prefix):
                    return part[len(prefix) :][:MAX_KEY_BYTES]
    return None
