"""``[debug]``: who may ask for the decision trace of a real request (``x-isthmus-debug``).

Why an allow list: a trace names sites, endpoints and policy verdicts -- the overlay's shape,
which an arbitrary caller has no business reading.  Only callers listed here get one: by the
SPIFFE ID they authenticated with (mTLS to the listener), or by the address they connect
from.  Empty (the default): nobody; the header is then ignored (and never reaches an
endpoint either way).

``explain_peers``: the peer sites whose operators may ask for this site's trace through their
own gateway (``isthmus explain --from THIS-SITE``): such a trace shows this site's routing,
including services it exports to nobody.  Empty (the default): nobody; ``"*"``: every peer.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from foundation.names import label_problem
from foundation.spiffe_id import SpiffeId


def _sites_or_any(values: tuple[str, ...]) -> str | None:
    for value in values:
        problem = None if value == "*" else label_problem(value)
        if problem:
            return f"{value!r}: {problem}"
    return None


@dataclass(frozen=True, slots=True)
class Cidr:
    """A network in CIDR notation (``10.0.0.0/8``, ``::1/128``); host bits must be zero."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network

    @classmethod
    def parse(cls, text: str) -> Cidr:
        try:
            return cls(ipaddress.ip_network(text, strict=True))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a CIDR network: {exc}") from None

    def __contains__(self, address: str) -> bool:
        try:
            return ipaddress.ip_address(address) in self.network
        except ValueError:
            return False

    def __str__(self) -> str:
        return str(self.network)


@dataclass(frozen=True, slots=True)
class DebugConfig:
    """``allow_ids``: caller SPIFFE IDs; ``allow_cidrs``: caller source networks;
    ``explain_peers``: peer sites that may have this site's trace."""

    allow_ids: tuple[SpiffeId, ...] = ()
    allow_cidrs: tuple[Cidr, ...] = ()
    #: Peer sites that may ask for this site's trace (``isthmus explain --from``); ``*``: all.
    explain_peers: tuple[str, ...] = field(default=(), metadata={"check": _sites_or_any})

    def allows(self, caller_id: SpiffeId | None, caller_address: str | None) -> bool:
        """Whether this caller may get a trace (pure)."""
        if caller_id is not None and caller_id in self.allow_ids:
            return True
        return caller_address is not None and any(caller_address in c for c in self.allow_cidrs)
