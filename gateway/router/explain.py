"""The decision trace of one request, without sending it (pure, no trio).

Why a value: ``isthmus explain`` and the debug header must say what the router *does*, so the
trace is built from the same steps -- :func:`gateway.router.decide.resolve` (address, sites in
failover order, 404 versus 503) and :func:`site_takes` (whether the walk stops at a site or
moves on, the rule of :mod:`gateway.router.failover`) -- and from what each site would do,
learned without sending anything (:class:`SiteProbe`: the local cluster's preview of its pick,
a peer's own verdict asked over the link; see :mod:`gateway.router.explain_run`).

Reading a trace: ``candidates`` lists every site of the route in failover order, each
``chosen`` (the walk stops there: it forwards, or its answer stands), ``skipped`` (the walk
moves on, and why) or ``not reached`` (an earlier site takes the request).  ``status`` is None
when the request would reach an endpoint (``site``, ``endpoint``), else the answer the caller
would get and ``outcome`` says why.  ``route`` names the ``[[routes]]`` rule that matched;
None is the default route (by L7 address).  ``limits`` are the bounds the request would run
under at this gateway.  A trace holds no header value of the request (credentials never
appear in it).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.router.decide import LINK_DOWN, Resolution
from gateway.router.failover import Attempt, describe

Decision = Literal["chosen", "skipped", "not reached"]
LinkState = Literal["local", "up", "down"]
#: A site's verdict on the request (policy at the destination): "" when not asked.
Policy = Literal["allowed", "denied", "not reached", "unknown", ""]


@dataclass(frozen=True, slots=True)
class EndpointPick:
    """The endpoint a site's balancer would choose next (a preview: nothing moved)."""

    address: str
    port: int
    protocol: str
    balancer: str

    def as_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "port": self.port,
            "protocol": self.protocol,
            "balancer": self.balancer,
        }

    @staticmethod
    def from_json(doc: Any) -> EndpointPick | None:
        """From a peer's answer; None for anything that is not a well-formed pick."""
        if not isinstance(doc, dict):
            return None
        address, port = doc.get("address"), doc.get("port")
        protocol, balancer = doc.get("protocol", ""), doc.get("balancer", "")
        if not isinstance(address, str) or not isinstance(port, int) or isinstance(port, bool):
            return None
        if not isinstance(protocol, str) or not isinstance(balancer, str):
            return None
        return EndpointPick(address[:255], port, protocol[:32], balancer[:32])


@dataclass(frozen=True, slots=True)
class SiteProbe:
    """What one candidate site would do with the request, learned without sending it.

    ``status`` 200: it would forward to ``endpoint``; anything else is the answer it would
    give, ``reason`` says why, and ``fails_over`` whether that answer lets the router move on
    to the next site (the site did no work) or stands.  ``answered`` False: a peer that did
    not answer the question in time (the trace says so; the walk would still send there).
    """

    site: str
    link: LinkState
    status: int = 200
    reason: str = ""
    fails_over: bool = False
    policy: Policy = ""
    endpoint: EndpointPick | None = None
    answered: bool = True


def link_down(site: str) -> SiteProbe:
    """The probe of a peer with no live link: skipped at once, as the walk does."""
    return SiteProbe(site, "down", 503, LINK_DOWN, fails_over=True)


def site_takes(probe: SiteProbe) -> bool:
    """Whether the walk stops at this site: it forwards, or its answer stands.  A site with
    its link down, or one that would do no work (no healthy endpoint), passes to the next."""
    return probe.link != "down" and not probe.fails_over


@dataclass(frozen=True, slots=True)
class Candidate:
    """One site of the route, in failover order, and what the walk does there."""

    site: str
    decision: Decision
    reason: str
    link: LinkState
    policy: Policy = ""
    endpoint: EndpointPick | None = None
    answered: bool = True

    def as_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "decision": self.decision,
            "reason": self.reason,
            "link": self.link,
            "policy": self.policy or None,
            "endpoint": None if self.endpoint is None else self.endpoint.as_json(),
            "answered": self.answered,
        }


@dataclass(frozen=True, slots=True)
class Limit:
    """One bound the request runs under (name as in the config, value as text)."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class Trace:
    """The decision trace of one request (see the module docstring)."""

    authority: str
    address: str | None
    route: str | None
    status: int | None
    outcome: str
    site: str | None = None
    endpoint: EndpointPick | None = None
    candidates: tuple[Candidate, ...] = ()
    limits: tuple[Limit, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "authority": self.authority,
            "address": self.address,
            "route": self.route or "default",
            "status": self.status,
            "outcome": self.outcome,
            "site": self.site,
            "endpoint": None if self.endpoint is None else self.endpoint.as_json(),
            "candidates": [c.as_json() for c in self.candidates],
            "limits": {lim.name: lim.value for lim in self.limits},
            "sent": False,
        }

    def summary(self) -> str:
        """One line for a response header or a log field: each site and the outcome."""
        parts = [f"{c.site}={c.decision}" for c in self.candidates if c.decision != "not reached"]
        where = f"{self.site}/{self.endpoint.address}:{self.endpoint.port}" if self.endpoint else ""
        head = f"status={self.status}" if self.status is not None else f"to={where}"
        return "; ".join([f"route={self.route or 'default'}", *parts, head])


def refused(authority: bytes, status: int, reason: str, limits: Sequence[Limit] = ()) -> Trace:
    """The trace of a request the router answers itself before any site (404, 503)."""
    return Trace(
        authority.decode("ascii", "replace"), None, None, status, reason, limits=tuple(limits)
    )


def _reason(probe: SiteProbe) -> str:
    if probe.link == "down":
        return LINK_DOWN
    if not probe.answered:
        return f"the peer did not answer the question ({probe.reason}); the request would go there"
    if probe.status == 200:
        where = (
            "" if probe.endpoint is None else f" to {probe.endpoint.address}:{probe.endpoint.port}"
        )
        return f"first site able to serve it: would forward{where}"
    if probe.fails_over:
        return f"{probe.status}: {probe.reason} (did no work: the walk moves on)"
    return f"{probe.status}: {probe.reason} (stands: the walk stops here)"


def explain(
    authority: bytes,
    resolution: Resolution,
    probes: Mapping[str, SiteProbe],
    *,
    limits: Sequence[Limit] = (),
    route: str | None = None,
) -> Trace:
    """The trace of a resolved request: each site in order with what the walk does there.

    ``probes`` holds the sites probed up to the first that takes the request; the later ones
    are ``not reached`` (a probe given for one says only its link state).  No site takes it:
    503 naming each, as the router answers.
    """
    candidates: list[Candidate] = []
    attempts: list[Attempt] = []
    taken: SiteProbe | None = None
    for site in resolution.sites:
        probe = probes.get(site)
        if taken is not None or probe is None:
            link: LinkState = "up" if probe is None else probe.link
            candidates.append(Candidate(site, "not reached", "an earlier site takes it", link))
            continue
        takes = site_takes(probe)
        candidates.append(
            Candidate(
                site,
                "chosen" if takes else "skipped",
                _reason(probe),
                probe.link,
                probe.policy,
                probe.endpoint,
                probe.answered,
            )
        )
        if takes:
            taken = probe
        else:
            attempts.append(Attempt(site, probe.reason))
    text = authority.decode("ascii", "replace")
    address = str(resolution.address)
    if taken is None:
        outcome = f"{address}: every site failed ({describe(attempts)})"
        return Trace(
            text, address, route, 503, outcome, None, None, tuple(candidates), tuple(limits)
        )
    if not taken.answered:
        outcome = f"would be sent to site {taken.site}, which did not say what it would do"
        return Trace(
            text, address, route, None, outcome, taken.site, None, tuple(candidates), tuple(limits)
        )
    if taken.status != 200:
        outcome = f"site {taken.site} would answer {taken.status}: {taken.reason}"
        return Trace(
            text,
            address,
            route,
            taken.status,
            outcome,
            taken.site,
            None,
            tuple(candidates),
            tuple(limits),
        )
    ep = taken.endpoint
    to = "" if ep is None else f", endpoint {ep.address}:{ep.port} ({ep.protocol})"
    outcome = f"would be forwarded to site {taken.site}{to}"
    return Trace(
        text, address, route, None, outcome, taken.site, ep, tuple(candidates), tuple(limits)
    )
