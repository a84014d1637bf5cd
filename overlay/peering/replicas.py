"""A peer site's replicas: which one takes a new stream, when the site is down, which replica
an accepted link belongs to.

Why: a site may run several gateways (same site name, same trust domain; docs/replicas.md).
Peering keeps one :class:`~overlay.peering.links.PeerLinks` per replica -- each with its own
links, PING deadline, export and import -- and this module holds the few decisions that look
across them.  Pure (no trio, no sockets), unit-tested directly
(tests/overlay/peering/test_replicas.py):

* :func:`pick_replica` -- a new stream goes to the live replica with the smallest share of its
  stream slots in use, counted in steps of :data:`LOAD_STEPS` of the slots; ties rotate with
  ``turn``, so an idle site's requests alternate instead of all landing on the first
  replica.  Why steps: a connection always holds a stream or two for itself (the export, a
  dialer's reverse connection), and not the same number on every replica; compared stream by
  stream, the replica with one fewer of those would take every request of a quiet site.
  A *suspect* replica -- one that lost a link moments ago -- comes last: a killed gateway's
  links break one by one (each is noticed when its own socket read fails, or at its PING
  deadline), so the link still "live" to a replica whose other link just broke is likely
  dead too, and a request sent again after the break must go to another replica.
* :func:`down_sites` -- a site is down only when *every* replica is: liveness stays per link,
  and failover to the next site happens only then.
* :func:`accept_replica` -- a replica that dialed us is known by its SPIFFE ID, which replicas
  may share: the link goes to the replica configured at its source host whose accepted slot
  is free, else to any replica with a free slot, else to the first one of that host.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ReplicaLoad:
    """One live replica as the spreading sees it: the streams open on the connection it
    would send on, over the peer's limit on them."""

    open_streams: int
    max_streams: int
    suspect: bool = False  # lost a link within the last PING deadline (see above)


def is_suspect(link_lost_at: float | None, now: float, window: float) -> bool:
    """Whether a replica that lost a link at ``link_lost_at`` is still suspect at ``now``."""
    return link_lost_at is not None and now - link_lost_at < window


#: Loads are compared in 1/LOAD_STEPS of a connection's stream slots (100 slots: steps of 6).
LOAD_STEPS = 16


def pick_replica(loads: Sequence[ReplicaLoad], turn: int) -> int | None:
    """The index of the replica a new stream goes to (see the module docstring); ``None``
    when there is none.  Full replicas are picked too (last): the chosen connection's own
    stream-slot wait then applies, as with one replica."""
    n = len(loads)
    if n == 0:
        return None
    best: int | None = None
    best_key = (0, 0, 0, 0)
    for k in range(n):
        i = (turn + k) % n
        load = loads[i]
        limit = max(1, load.max_streams)
        full = 1 if load.open_streams >= limit else 0
        step = load.open_streams * LOAD_STEPS // limit
        key = (1 if load.suspect else 0, full, step, k)
        if best is None or key < best_key:
            best, best_key = i, key
    return best


def down_sites(replicas_up: Iterable[tuple[str, bool]]) -> frozenset[str]:
    """The sites none of whose replicas is up, from (site, replica up) pairs."""
    up: set[str] = set()
    seen: set[str] = set()
    for site, is_up in replicas_up:
        seen.add(site)
        if is_up:
            up.add(site)
    return frozenset(seen - up)


def accept_replica(replicas: Sequence[tuple[str, bool]], remote_host: str) -> int | None:
    """Which replica a link accepted from ``remote_host`` fills, from (configured host,
    accepted slot taken) per replica; ``None`` when there are no replicas."""
    if not replicas:
        return None
    same_host = [i for i, (host, _taken) in enumerate(replicas) if host == remote_host]
    for i in same_host:
        if not replicas[i][1]:
            return i
    for i, (_host, taken) in enumerate(replicas):
        if not taken:
            return i
    return same_host[0] if same_host else 0
