"""Which part of a site's gateway a process plays, and the hooks between the parts.

Why a separate module: :mod:`gateway.app` assembles all three roles and the worker package
builds on :mod:`gateway.app`; these small types let each refer to the other without an import
cycle.

* ``single`` -- ``[site] workers = 0``: one process does everything (the layout before
  workers; the in-process tests use it).
* ``supervisor`` -- discovery, federation, health checks, fleet, admin API; it starts the
  workers and feeds them (docs/workers.md).
* ``worker`` -- the data plane: caller listeners, the east-west listener and worker links.
"""

from __future__ import annotations

from typing import Any, Literal, Protocol

import trio

from overlay.link.accept import Handoff

Role = Literal["single", "supervisor", "worker"]

#: A worker's east-west hook (:data:`overlay.link.accept.Handoff`): given each accepted TCP
#: socket before TLS, True when it went to the supervisor (not a worker link).
__all__ = ["Handoff", "Role", "Supervision"]


class Supervision(Protocol):
    """What :func:`gateway.app.serve_gateway` needs of the supervisor's worker side."""

    async def start(self, nursery: trio.Nursery, gw: Any, reloader: Any) -> int | None:
        """Start the workers (and the supervisor's side of east-west); the east-west port."""

    def admin_views(self, views: dict[str, Any], queries: dict[str, Any]) -> None:
        """Add or replace admin views and queries (``/workers``; ``/metrics`` and ``/links``
        with the workers' figures, which take a round trip to them: queries)."""
