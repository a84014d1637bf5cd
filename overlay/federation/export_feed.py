"""Fold local catalog snapshots into one peer's export view (pure, sliced).

Moved out of the stream adapter so that the fold is a pure, resumable computation
(:mod:`discovery.steps`): :meth:`PeerExport.update_steps` pauses every ``slice_items``
endpoints, and :func:`overlay.federation.stream.run_export` drives it with a checkpoint between
slices.  A full recompute (first snapshot, or a source's standing changed) walks every local
endpoint -- ~0.3 s at 100k -- and a 1 % churn spread over every service touches them all too;
neither may hold the event loop that carries the requests.

Per-service endpoints are taken unsorted: an aggregate does not depend on order, and sorting
100k keys (dataclass comparisons in Python) was the largest single cost of an export update.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace

from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from discovery.steps import UNSLICED, Steps, complete
from overlay.federation.config import ExportConfig
from overlay.federation.export import (
    EMPTY_VIEW,
    ExportView,
    compute_export_steps,
    update_export_steps,
)


def routable_endpoints(catalog: Catalog, now: float) -> Iterator[Endpoint]:
    """Every listed endpoint, healthy only if the catalog would route to it now."""
    for entry in catalog.entries():
        ep = entry.endpoint
        ok = catalog.is_routable(entry, now)
        yield ep if ok == ep.healthy else replace(ep, healthy=ok)


def _service_endpoints(catalog: Catalog, service: ServiceName, now: float) -> Iterator[Endpoint]:
    """The service's endpoints as routable now, in no particular order (lazily: the sliced
    loop that reads them may pause inside one big service)."""
    endpoints = catalog.services.get(service)
    for entry in endpoints.values() if endpoints is not None else ():
        ep = entry.endpoint
        ok = catalog.is_routable(entry, now)
        yield ep if ok == ep.healthy else replace(ep, healthy=ok)


def changed_services(old: Catalog, new: Catalog) -> set[ServiceName] | None:
    """Services whose endpoint maps differ between two snapshots, or None for "everything".

    Persistent maps make this an identity check per service.  A change in any source's
    standing (stale, expired) can change every endpoint's routability, so it means everything.
    """
    if old.sources is not new.sources:
        for name in set(old.sources.keys()) | set(new.sources.keys()):
            a, b = old.sources.get(name), new.sources.get(name)
            if (
                a is None
                or b is None
                or (a.stale, a.expired, a.grace_until) != (b.stale, b.expired, b.grace_until)
            ):
                return None
    names = set(old.services.keys()) | set(new.services.keys())
    changed = {s for s in names if old.services.get(s) is not new.services.get(s)}
    if old.ejected is not new.ejected:  # the gateway's own ejections changed routability
        keys = set(old.ejected.keys()) ^ set(new.ejected.keys())
        changed.update(k.service for k in keys)
    return changed


class PeerExport:
    """The export view for one peer, kept up to date from catalog snapshots (pure)."""

    def __init__(self, peer: str, rules: Sequence[ExportConfig]) -> None:
        self.peer = peer
        self.rules = tuple(rules)
        self.view: ExportView = EMPTY_VIEW
        self._catalog: Catalog | None = None

    def set_rules(self, rules: Sequence[ExportConfig]) -> None:
        """New export rules (a config reload): the next update recomputes the whole view."""
        self.rules = tuple(rules)
        self._catalog = None

    def update(self, catalog: Catalog, now: float) -> frozenset[ServiceName] | None:
        """Fold ``catalog`` in; return the services whose export changed (None: recomputed)."""
        return complete(self.update_steps(catalog, now, slice_items=UNSLICED))

    def update_steps(
        self, catalog: Catalog, now: float, *, slice_items: int
    ) -> Steps[frozenset[ServiceName] | None]:
        """:meth:`update`, pausing every ``slice_items`` endpoints.

        The state changes only when the computation completes: one abandoned half-way (the
        stream was cancelled) leaves the previous view in place.
        """
        previous = self._catalog
        changed = None if previous is None else changed_services(previous, catalog)
        if changed is None:
            self.view = yield from compute_export_steps(
                routable_endpoints(catalog, now), self.rules, self.peer, slice_items=slice_items
            )
            self._catalog = catalog
            return None
        if not changed:
            self._catalog = catalog
            return frozenset()
        # Each service's endpoints are gathered as the sliced loop reaches it, not up front.
        per_service = ((s, _service_endpoints(catalog, s, now)) for s in changed)
        view, touched = yield from update_export_steps(
            self.view, per_service, self.rules, self.peer, slice_items=slice_items
        )
        self.view, self._catalog = view, catalog
        return touched
