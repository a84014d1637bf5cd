"""A consistent hash ring: the same key goes to the same endpoint, and when endpoints come or
go only the keys they owned move.

Why: some services keep per-user state in memory (a cache, a session); sending a user's
requests (a header or cookie value) to the same instance keeps that state warm.  A plain
``hash mod n`` would move almost every key when ``n`` changes; a ring moves only ~1/n.

Theory of operation
-------------------
Each endpoint owns ``points_per_weight x weight`` points on a 64-bit ring (the BLAKE2b hash of
``"<address>:<port>#<i>"``), scaled down together so the ring never exceeds ``MAX_POINTS``.
A key's hash lands on the first point at or after it (wrapping): that point's owner is the
pick; the next *distinct* owners clockwise are the fallbacks.  Because an endpoint's points
depend only on its own name, adding one only takes keys from others (to itself) and removing
one only hands its own keys on: no key moves between endpoints that stayed.

The ring is built once per change of the endpoint set (``O(P log P)``, P points) and looked up
by bisection (``O(log P)``).
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from gateway.cluster.wrr import effective_weights

POINTS_PER_WEIGHT = 100
MAX_POINTS = 16_384


def hash64(data: bytes) -> int:
    """A stable 64-bit hash (BLAKE2b): the same on every gateway and every run."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class Ring:
    """Sorted points and, per point, the index of the endpoint that owns it."""

    names: tuple[str, ...]
    weights: tuple[int, ...]
    points: tuple[int, ...]
    owners: tuple[int, ...]
    #: How many endpoints own points (a weight-0 endpoint owns none).
    members: int = 0


def build_ring(
    names: Sequence[str], weights: Sequence[int], *, points_per_weight: int = POINTS_PER_WEIGHT
) -> Ring:
    """The ring of endpoints called ``names`` (unique, e.g. ``"10.0.0.1:8080"``)."""
    eff = effective_weights(weights) if names else ()
    total = sum(eff) * points_per_weight
    scale = min(1.0, MAX_POINTS / total) if total else 1.0
    pairs: list[tuple[int, int]] = []
    for index, (name, weight) in enumerate(zip(names, eff, strict=True)):
        count = max(1, round(weight * points_per_weight * scale)) if weight else 0
        base = name.encode()
        pairs.extend((hash64(base + b"#%d" % i), index) for i in range(count))
    pairs.sort()
    owners = tuple(o for _, o in pairs)
    points = tuple(p for p, _ in pairs)
    return Ring(tuple(names), tuple(weights), points, owners, len(set(owners)))


def ring_order(ring: Ring, key_hash: int, limit: int) -> tuple[int, ...]:
    """Up to ``limit`` distinct endpoint indices: the owner of ``key_hash``, then the next
    distinct owners clockwise."""
    if not ring.points:
        return ()
    limit = min(limit, ring.members)  # so the walk ends as soon as every owner was seen
    start = bisect.bisect_left(ring.points, key_hash)
    size = len(ring.points)
    out: list[int] = []
    for step in range(size):
        owner = ring.owners[(start + step) % size]
        if owner not in out:
            out.append(owner)
            if len(out) >= limit:
                break
    return tuple(out)
