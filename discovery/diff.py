"""What changed between two catalog snapshots, as the merged view sees it.

Subscribers (routers, the federation exporter) act on keys: ``added`` and ``removed`` are
endpoints that appeared in / left the merged view; ``updated`` are endpoints whose merged entry
changed (attributes, or the set of sources reporting it).  Freshness is per source, so
``sources_changed`` names the sources whose state changed (stale, fresh, expired, new version):
every entry those sources report may have changed freshness without changing keys.

``rejected`` lists what :func:`discovery.catalog.apply_many` refused (bad port, too many
endpoints, ...): the catalog is unchanged by those, and the applier logs them.
"""

from __future__ import annotations

from dataclasses import dataclass

from discovery.model import EndpointKey


@dataclass(frozen=True, slots=True)
class Rejection:
    """One refused event or endpoint and why (``key`` is None when no key applies)."""

    source: str
    key: EndpointKey | None
    reason: str


@dataclass(frozen=True, slots=True)
class Diff:
    version: int
    added: frozenset[EndpointKey] = frozenset()
    updated: frozenset[EndpointKey] = frozenset()
    removed: frozenset[EndpointKey] = frozenset()
    sources_changed: frozenset[str] = frozenset()
    rejected: tuple[Rejection, ...] = ()

    @property
    def empty(self) -> bool:
        """True when no endpoint and no source state changed (rejections do not count)."""
        return not (self.added or self.updated or self.removed or self.sources_changed)

    def __len__(self) -> int:
        return len(self.added) + len(self.updated) + len(self.removed)
