"""Whether a peer may make the call it sent, and to which local service (pure).

In order, the first failure answers: the ``:authority`` is an L7 address of this mesh (pinned
to another site -> 404: this gateway does not relay; not an L7 address -> 400); the peer
reaches only endpoints exported to it (:func:`~overlay.federation.export.consents`: a service
with no endpoint exported to this peer is unknown to it -> 404); then
:func:`gateway.policy.check` (default deny from other sites -> 403).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from gateway.config.model import PolicyConfig
from gateway.http.errors import MalformedHeaders, UnknownAddress
from gateway.http.exchange import CallContext, Request
from gateway.policy import check
from overlay.address import AddressError, NotInMeshError, parse_authority_cached
from overlay.federation.config import ExportConfig
from overlay.federation.export import consents


def admit(
    request: Request,
    ctx: CallContext,
    *,
    peer_site: str,
    local_site: str,
    mesh_domain: str,
    catalog: Catalog,
    export_rules: Sequence[ExportConfig],
    policies: Sequence[PolicyConfig],
) -> ServiceName:
    """Address, consent and policy checks; the local service to call."""
    try:
        address, _port = parse_authority_cached(
            request.authority.decode("ascii"), mesh_domain=mesh_domain
        )
    except NotInMeshError as exc:
        raise UnknownAddress(str(exc)) from None
    except (AddressError, UnicodeDecodeError) as exc:
        raise MalformedHeaders(f":authority is not an L7 address: {exc}") from None
    if address.site not in (None, local_site):
        raise UnknownAddress(
            f"{address} is pinned to site {address.site!r}; this is {local_site!r}"
        )
    service = address.service_name
    exported = any(
        consents(export_rules, entry.endpoint, peer_site) for entry in catalog.endpoints(service)
    )
    if not exported:
        raise UnknownAddress(f"{address.any_site()} is not exported to site {peer_site!r}")
    check(policies, service, ctx, local_site)
    return service


def exported_to(export_rules: Sequence[ExportConfig], peer_site: str) -> Callable[[Endpoint], bool]:
    """The endpoints ``peer_site`` may reach (the others are not candidates for its call)."""

    def only(endpoint: Endpoint) -> bool:
        return consents(export_rules, endpoint, peer_site)

    return only
