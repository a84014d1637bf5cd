"""The Trio-side adapter of ``GET /overlay``: reads the live state, keeps the rate window.

The document itself is built by the pure :func:`gateway.admin.overlay_map.overlay_json`; the
recent traffic rates by :class:`gateway.admin.traffic.RateWindow`.  This closure only gathers
their inputs at the moment of the request and keeps the window between requests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import trio

from discovery.snapshot import Catalog
from discovery.watch import Watch
from gateway.admin.overlay_map import overlay_json
from gateway.admin.traffic import FROM_PEERS, RateWindow, site_totals
from gateway.observe.observer import Observer
from overlay.peering.peers import Peering

__all__ = ["overlay_view"]


def overlay_view(
    local_site: str,
    peering: Peering,
    catalog: Watch[Catalog],
    observer: Observer | None,
    *,
    clock: Callable[[], float] = trio.current_time,
) -> Callable[[], dict[str, Any]]:
    """The ``/overlay`` view; ``observer`` None means metrics are off (no traffic rates)."""
    window = RateWindow()

    def view() -> dict[str, Any]:
        nonlocal window
        now = clock()
        links = peering.status()
        rates = None
        if observer is not None:
            totals = site_totals(observer.requests, observer.bytes_in, observer.bytes_out)
            window = window.add(now, totals)
            rates = window.rates([local_site, FROM_PEERS, *links])
        return overlay_json(
            local_site=local_site,
            links=links,
            imports=peering.imports.latest,
            catalog=catalog.latest,
            export_rules=peering.export_rules,
            now=now,
            rates=rates,
            window_s=None if observer is None else window.window_s,
        )

    return view
