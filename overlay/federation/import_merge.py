"""One site's imports from the copies its replicas export (pure).

Why: every replica of a site exports the same catalog, each over its own federation stream,
with its own epoch and versions.  The importer keeps one :class:`PeerImports` per replica
(:class:`~overlay.federation.import_.ImportTable` ``replicas``) and presents the site as one,
merged here, so that the routing view does not flap when one replica restarts:

* **Fresh replicas win.**  While any replica's copy is fresh, the site is fresh and shows the
  union of the fresh copies; a stale copy (its link went down) adds nothing, so a service the
  live replicas no longer export is not kept alive by a dead one.
* **The most recent copy wins a conflict.**  A service in several copies is taken from the
  copy confirmed last (ties: the last replica key), the one most likely to know of the latest
  health change.  The site's epoch, version and ``confirmed_at`` are that copy's too.
* **Stale only when all are.**  When every copy is stale the site is stale since the *last*
  replica went (the union of all copies is kept), so its grace runs from the moment the site,
  not one replica, became unreachable.

With one replica the merge is that replica's copy itself, unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import immutables

if TYPE_CHECKING:  # import_ imports this module: its types only, no cycle at run time
    from discovery.model import ServiceName
    from overlay.federation.import_ import ImportedService, PeerImports


def merge_site(
    copies: Sequence[tuple[str, PeerImports]], previous: PeerImports | None = None
) -> PeerImports | None:
    """The site's merged imports from (replica key, copy) pairs of one site; ``None``: none.

    ``previous`` (the site's last merge): its ``routes`` object is kept while the merged
    routes are equal to it, so readers still see a route change by identity."""
    if not copies:
        return None
    if len(copies) == 1:
        return copies[0][1]
    fresh = [(key, c) for key, c in copies if not c.stale]
    base = fresh or list(copies)
    base.sort(key=lambda kc: (kc[1].confirmed_at, kc[0]))
    newest = base[-1][1]
    if len(base) == 1:
        return newest  # the one fresh copy
    merged: dict[ServiceName, ImportedService] = {}
    routes: dict[ServiceName, tuple[str, ...]] = {}
    for _key, copy in base:  # oldest first: a later copy's entry replaces an earlier one
        merged.update(copy.services.items())
        routes.update(copy.routes.items())
    kept = previous.routes if previous is not None else None
    same = kept is not None and len(kept) == len(routes) and all(
        kept.get(name) == texts for name, texts in routes.items()
    )
    stale_since = None if fresh else max(c.stale_since or 0.0 for _k, c in copies)
    return replace(
        newest,
        services=immutables.Map(merged),
        stale_since=stale_since,
        routes=kept if same and kept is not None else immutables.Map(routes),
    )
