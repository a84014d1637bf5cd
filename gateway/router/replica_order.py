"""The order of attempts over sites when a peer site has several replicas (pure).

Why: a replica's link can break with a request on it (the replica was killed).  With one
gateway per site, such a request -- when it is safe to send again (nothing reached the site,
or an idempotent method) -- fails over to the next site.  With replicas the next place to go
is the *same site*: its other replica, which is up.  So a site with ``n`` replicas appears
``n`` times in a row in the walk; each appearance asks ``Peering.outbound(site)`` afresh,
and by then the broken replica's connection is closing and out of the set.  The failover and
retry rules (:mod:`gateway.router.failover`, :mod:`gateway.router.retry`) are unchanged: they
simply see one more place to go before the next site.
"""

from __future__ import annotations

from collections.abc import Callable


def attempt_order(
    sites: tuple[str, ...], replicas: Callable[[str], int], local_site: str
) -> tuple[str, ...]:
    """``sites`` with each peer site repeated once per replica (the local site once)."""
    counts = [1 if s == local_site else max(1, replicas(s)) for s in sites]
    if all(n == 1 for n in counts):
        return sites
    return tuple(s for s, n in zip(sites, counts, strict=True) for _ in range(n))
