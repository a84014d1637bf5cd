"""Locality preference: keep traffic in the gateway's own zone while that zone can carry it.

Why: endpoints in the gateway's locality (a zone, a rack; the ``locality`` a source reports)
are the cheapest and fastest to reach.  But sending everything there when most of its
endpoints are down would overload the few that are left, so the preference holds only while
at least ``min_healthy_percent`` of the locality's listed endpoints are routable; below that
every routable endpoint shares the load (Envoy calls this the panic threshold).

Pure: the caller passes the routable candidates and how many endpoints the locality lists.
"""

from __future__ import annotations

from discovery.model import Endpoint


def prefer_locality(
    candidates: tuple[Endpoint, ...],
    locality: str,
    listed_in_locality: int,
    min_healthy_percent: int,
) -> tuple[tuple[Endpoint, ...], tuple[Endpoint, ...]]:
    """``(preferred, others)``: balance over ``preferred``; ``others`` are connect fallbacks
    only.  Without a locality, or with too few healthy in it, ``(candidates, ())``."""
    if not locality:
        return candidates, ()
    local = tuple(ep for ep in candidates if ep.locality == locality)
    if not local or len(local) * 100 < listed_in_locality * min_healthy_percent:
        return candidates, ()
    if len(local) == len(candidates):
        return candidates, ()
    return local, tuple(ep for ep in candidates if ep.locality != locality)
