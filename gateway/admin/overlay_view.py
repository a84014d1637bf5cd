"""The Trio-side adapter of ``GET /overlay``: reads the live state, keeps what can be reused.

The document itself is built by the pure :func:`gateway.admin.overlay_map.overlay_json`; the
recent traffic rates by :class:`gateway.admin.traffic.RateWindow`.  This closure gathers their
inputs at the moment of the request and keeps, between requests, the rate window and the
costly parts of the document (:func:`~gateway.admin.overlay_map.local_part`,
:func:`~gateway.admin.overlay_map.imported_part`).  Those depend on immutable snapshots (the
catalog, the export rules, each peer's imports), so they are reused while the same snapshot
objects are current; the local part at most :data:`LOCAL_REUSE_S` seconds, because whether
an endpoint is routable also depends on the time (a stale source's grace runs out).  So a
page left open, or several, cost the event loop little on a large catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import trio

from discovery.snapshot import Catalog
from discovery.steps import Steps
from discovery.watch import Watch
from gateway.admin.overlay_map import (
    ImportedPart,
    LocalPart,
    imported_part,
    local_part_steps,
    overlay_json,
)
from gateway.admin.sliced import Sliced
from gateway.admin.traffic import FROM_PEERS, RateWindow, SiteTotals, site_totals
from gateway.observe.observer import Observer
from overlay.federation.config import ExportConfig
from overlay.federation.import_ import PeerImports
from overlay.peering.peers import Peering

__all__ = ["LOCAL_REUSE_S", "overlay_view"]

LOCAL_REUSE_S = 5.0


LocalKey = tuple[Catalog, tuple[ExportConfig, ...], tuple[str, ...]]


def _same(old: LocalKey | None, new: LocalKey) -> bool:
    """The same snapshot objects (immutable: the same object is the same content) and peers."""
    return old is not None and old[0] is new[0] and old[1] is new[1] and old[2] == new[2]


def overlay_view(
    local_site: str,
    peering: Peering,
    catalog: Watch[Catalog],
    observer: Observer | None,
    *,
    clock: Callable[[], float] = trio.current_time,
    totals: Callable[[], Mapping[str, SiteTotals]] | None = None,
) -> Callable[[], Sliced]:
    """The ``/overlay`` view; ``observer`` None means metrics are off (no traffic rates).

    ``totals`` (a supervisor's, in worker mode): the site's traffic totals when this process's
    own ``observer`` does not count them all (its workers serve the requests); it must be
    synchronous and cheap, like the view.

    Its answer is :class:`Sliced`: the local part (up to 20k endpoints checked) is computed a
    slice per loop step by the admin server."""
    window = RateWindow()
    local_key: LocalKey | None = None
    local_at = 0.0
    local: LocalPart | None = None
    imported: dict[str, tuple[PeerImports, ImportedPart]] = {}

    def view() -> Sliced:
        return Sliced(render(), exclusive=False)  # bounded work: never behind a /catalog

    def render() -> Steps[dict[str, Any]]:
        nonlocal window, local_key, local_at, local, imported
        now = clock()
        links = peering.status()
        rates = None
        if observer is not None:
            counted = (
                totals()
                if totals is not None
                else site_totals(observer.requests, observer.bytes_in, observer.bytes_out)
            )
            window = window.add(now, counted)
            rates = window.rates([local_site, FROM_PEERS, *links])
        snapshot, rules, table = catalog.latest, peering.export_rules, peering.imports.latest
        key = (snapshot, rules, tuple(sorted(links)))
        if local is None or not _same(local_key, key) or now - local_at >= LOCAL_REUSE_S:
            # the costly part, a slice per loop step; what it reads are frozen snapshots
            fresh = yield from local_part_steps(snapshot, rules, key[2], now)
            local, local_key, local_at = fresh, key, now
        kept: dict[str, tuple[PeerImports, ImportedPart]] = {}
        for site, peer in table.peers.items():
            old = imported.get(site)
            kept[site] = old if old is not None and old[0] is peer else (peer, imported_part(peer))
        imported = kept
        return overlay_json(
            local_site=local_site,
            links=links,
            imports=table,
            catalog=snapshot,
            export_rules=rules,
            now=now,
            rates=rates,
            window_s=None if observer is None else window.window_s,
            local=local,
            imported={site: part for site, (_peer, part) in imported.items()},
        )

    return view
