"""What peering is given: the configured peers and its timing settings (built from the config)."""

from __future__ import annotations

from dataclasses import dataclass, field

from discovery.backoff import Backoff
from foundation.spiffe_id import SpiffeId
from overlay.h2.limits import H2Limits

#: See ``PeeringSettings.max_accepted_extras``.
MAX_ACCEPTED_EXTRAS = 1024


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """A peer as peering needs it (built from ``PeerConfig``)."""

    name: str
    host: str
    port: int
    spiffe_id: SpiffeId
    priority: int = 100
    dial: bool = True
    #: ``"host:port"`` when the site has several replicas (each its own spec), else ``""``.
    replica: str = ""

    @property
    def key(self) -> str:
        """What peering keys this replica's links by: the site name for a one-gateway site
        (as before replicas existed), ``site@host:port`` for each replica of a larger one."""
        return f"{self.name}@{self.replica}" if self.replica else self.name


@dataclass(frozen=True, slots=True)
class PeeringSettings:
    ping_interval: float = 5.0
    ping_timeout: float = 3.0
    connect_timeout: float = 10.0
    handshake_timeout: float = 10.0
    ack_timeout: float = 30.0
    import_grace: float = 60.0
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.25, cap_s=30.0))
    h2_limits: H2Limits | None = None
    startup_grace: float = 30.0
    #: Links this side may hold to each peer it dials (1: one link, no pool); see
    #: :mod:`overlay.peering.pool`.
    max_links_per_peer: int = 1
    #: Extra links a peer (one replica) may open to this side at once beyond its primary
    #: one, its pool's and its workers' links together; more are closed at once.  A peer's
    #: own pool opens at most 63 (``link_max_per_peer`` <= 64), each of its workers up to
    #: its ``link_max_per_peer``: the sum must stay within this bound (e.g. 64 workers x 4
    #: links, or 15 x 64) -- documented in docs/worker-links.md.  It bounds a misbehaving
    #: peer, never a well-behaved one within those numbers.
    max_accepted_extras: int = MAX_ACCEPTED_EXTRAS
    #: TLS handshakes this gateway runs at once, dials and accepts together; the rest wait in
    #: order (:mod:`overlay.link.handshake_gate`).
    max_concurrent_handshakes: int = 32
