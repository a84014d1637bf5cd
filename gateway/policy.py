"""Who may call a local service from other sites: the allow lists, as one pure predicate.

Why pure and here: the destination gateway decides, per request, from values it established
itself -- the authenticated peer link, the origin site and caller identity that peer vouched
for -- never from anything a caller could type.  A function of ``(policies, service, ctx)``
is trivially testable and cannot depend on which wire the request came in on.

Rules (``[[policies]]`` in the config, see :class:`~gateway.config.model.PolicyConfig`):

* a caller of this site (``ctx.caller_site == local_site`` and the request did not come from
  a peer) is always allowed: cross-site policy is about *other* sites;
* a caller from another site is allowed only if some policy matching the service
  (``service``/``namespace``, ``"*"`` matching any) lists the caller's origin site (or ``"*"``)
  in ``allow_sites``, or the caller's SPIFFE ID in ``allow_ids``;
* otherwise: denied (default deny).

A request handed to us by a peer that claims to come from *our own* site is not treated as
local: a peer cannot speak for this site's callers, so it needs a policy like anyone else.
"""

from __future__ import annotations

from collections.abc import Sequence

from discovery.model import ServiceName
from foundation.errors import IdentityError
from gateway.config.model import PolicyConfig
from gateway.http.exchange import CallContext

WILDCARD = "*"


class PolicyDenied(IdentityError):
    """The caller is not on the service's allow list (403)."""

    http_status = 403


def matches(policy: PolicyConfig, service: ServiceName) -> bool:
    """Whether ``policy`` is about ``service``."""
    return policy.service in (WILDCARD, service.name) and policy.namespace in (
        WILDCARD,
        service.namespace,
    )


def allowed(
    policies: Sequence[PolicyConfig], service: ServiceName, ctx: CallContext, local_site: str
) -> bool:
    """Whether the caller described by ``ctx`` may call ``service`` (see the module rules)."""
    if ctx.caller_site == local_site and ctx.from_peer is None:
        return True
    for policy in policies:
        if not matches(policy, service):
            continue
        if WILDCARD in policy.allow_sites or ctx.caller_site in policy.allow_sites:
            return True
        if ctx.caller_id is not None and ctx.caller_id in policy.allow_ids:
            return True
    return False


def check(
    policies: Sequence[PolicyConfig], service: ServiceName, ctx: CallContext, local_site: str
) -> None:
    """Raise :class:`PolicyDenied` (with a message that says who and what) unless allowed."""
    if not allowed(policies, service, ctx, local_site):
        who = f"site {ctx.caller_site!r}"
        if ctx.caller_id is not None:
            who += f" (caller {ctx.caller_id})"
        raise PolicyDenied(f"{who} may not call {service}: no policy allows it")
