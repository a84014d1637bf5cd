"""The routable endpoints of a service, remembered per catalog snapshot (pure, takes ``now``).

Why: :func:`discovery.catalog.routable` sorts a service's endpoint keys and checks every
entry's sources, on every request -- about 1 us per endpoint, 10 us for a service of 8 --
although its answer can only change when the catalog does (a new snapshot) or when a stale
source's grace runs out.  A snapshot is immutable, and the only time-dependent part of the
rule is ``now < grace_until`` (``expired`` is fixed in the snapshot), so the answer for a
snapshot is the same from ``now`` until the earliest ``grace_until`` still ahead.  The memo
keeps answers for one snapshot and until that instant, and starts over past either.
"""

from __future__ import annotations

import math

from discovery.catalog import routable
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog

__all__ = ["RoutableMemo", "stable_until"]


def stable_until(catalog: Catalog, now: float) -> float:
    """The earliest instant after ``now`` at which a source of ``catalog`` stops being
    usable (its stale grace ends); ``inf`` when none will."""
    return min(
        (
            state.grace_until
            for state in catalog.sources.values()
            if state.grace_until is not None and state.grace_until > now and not state.expired
        ),
        default=math.inf,
    )


class RoutableMemo:
    """``routable(catalog, service, now)``, computed once per service, snapshot and grace
    period.  Holds at most one answer per service of the current snapshot."""

    __slots__ = ("_answers", "_catalog", "_since", "_until")

    def __init__(self) -> None:
        self._catalog: Catalog | None = None
        self._since = math.inf
        self._until = -math.inf
        self._answers: dict[ServiceName, tuple[Endpoint, ...]] = {}

    def get(self, catalog: Catalog, service: ServiceName, now: float) -> tuple[Endpoint, ...]:
        if catalog is not self._catalog or not self._since <= now < self._until:
            self._catalog = catalog
            self._since = now
            self._until = stable_until(catalog, now)
            self._answers.clear()
        found = self._answers.get(service)
        if found is None:
            found = self._answers[service] = routable(catalog, service, now)
        return found
