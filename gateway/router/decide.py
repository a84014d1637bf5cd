"""The router's static decision, shared by ``forward`` and ``explain`` (pure, no trio).

Why one function: ``isthmus explain`` must say what the router *would* do, so the steps that
do not need I/O -- parse the authority, refuse an unknown site, ask the routing view for the
sites in failover order, 404 versus 503 when there are none -- are this one function, called
by :meth:`gateway.router.route.Router.resolve` on every request and by
:mod:`gateway.router.explain` for a trace.  They cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from discovery.model import ServiceName
from foundation.errors import UpstreamError
from gateway.http.errors import UnknownAddress
from gateway.router.failover import candidate_sites
from overlay.address import AddressError, L7Address, parse_authority_cached
from overlay.peering.route_table import RouteView

#: The reason a site is skipped at once: no live link to it (the walk and the trace say so).
LINK_DOWN = "link down"


class NoHealthySite(UpstreamError):
    """The service is known, but no site could take the request."""

    http_status = 503


@dataclass(frozen=True, slots=True)
class Resolution:
    """Where a request goes: its L7 address, port, and the sites to try, best first."""

    address: L7Address
    port: int | None
    sites: tuple[str, ...]


def resolve(
    authority: bytes,
    *,
    mesh_domain: str,
    local_site: str,
    peer_sites: Collection[str] | None,
    view: RouteView,
    known: Callable[[ServiceName], bool],
) -> Resolution:
    """Steps 1-3 of the router's walk (see :mod:`gateway.router.route`).

    Raises :class:`UnknownAddress` (404: not an address of this mesh, an unknown site, a
    service no site knows) or :class:`NoHealthySite` (503: known, but nothing healthy serves
    it), each with a message that says why.
    """
    text = authority.decode("ascii", "replace")
    try:
        address, port = parse_authority_cached(text, mesh_domain=mesh_domain)
    except AddressError as exc:
        raise UnknownAddress(
            f"{text!r} is not a service address of this mesh "
            f"(<service>.<namespace>[.<site>].{mesh_domain}): {exc}"
        ) from None
    pinned = address.site
    if (
        pinned is not None
        and pinned != local_site
        and peer_sites is not None
        and pinned not in peer_sites
    ):
        raise UnknownAddress(
            f"{text!r} names site {pinned!r}, which is neither this site "
            f"({local_site!r}) nor a configured peer (unknown site)"
        )
    sites = candidate_sites(view.sites_for(address))
    if not sites:
        if not known(address.service_name):
            raise UnknownAddress(f"no site knows the service {address}")
        where = f"site {address.site}" if address.site else "any site"
        raise NoHealthySite(f"{address}: no healthy endpoint in {where}")
    return Resolution(address, port, sites)
