"""The supervisor's half of the snapshot protocol: full snapshots in bounded parts, deltas.

Pure functions from immutable values to the messages of :mod:`gateway.workers.messages`;
:class:`gateway.workers.snapshot.SnapshotFeed` decides which to send when.

Why a byte *estimate* bounds the parts: a full snapshot of a 100k-endpoint catalog pickles to
tens of MiB, and one message that large would hold the channel (and the worker's event loop,
while it unpickles) for a long time and need a frame limit as large.  Pickling to measure
would double the cost, so each item is weighed by its variable-size fields (addresses,
metadata, routes, reasons) plus a constant; a part is closed when its weight reaches
``budget``.  The estimate errs high (a plain catalog entry pickles to about half its
weight), so real parts stay under the budget.

Deltas diff by identity: the catalog's and the import table's maps are persistent, so an
unchanged service (or site) is the same object in both snapshots and costs one ``is``.  A
changed service is diffed endpoint by endpoint (again by identity) unless it is small or
mostly changed, when it is sent whole.  A delta heavier than :data:`DELTA_PARTS` parts is
not built (``None``): the caller sends a full snapshot instead.  A lighter one that still
weighs more than ``budget`` is split like a full snapshot, into messages the worker applies
in turn and publishes at the last (a big service or site spans messages).

Why deltas are split too: the worker unpickles and applies a message in one step of its event
loop, and every request it serves waits meanwhile.  A peer's 10k services in one 1 MiB
message took 35 ms to unpickle alone on an idle core (frozen dataclasses are rebuilt field by
field), 64 ms in ``bench_stall.py --workers 2`` -- over the 50 ms budget of a loop stall.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import immutables

from discovery.map_diff import map_diff
from discovery.model import EndpointKey, ServiceName
from discovery.snapshot import Catalog, CatalogEntry
from gateway.cluster.health_checker import Failing as FailingMarks
from gateway.workers.messages import (
    CatalogDelta,
    CatalogHeader,
    CatalogPart,
    EntryRow,
    Failing,
    FailingDelta,
    ImportsDelta,
    ImportsPart,
    Routes,
    ServicePatch,
    SiteHeader,
    SitePatch,
    entry_row,
)
from overlay.federation.import_ import ImportedService, ImportTable, PeerImports

DEFAULT_BUDGET = 256 << 10
#: A delta weighs at most this many parts (``DELTA_PARTS * budget``); heavier, a full
#: snapshot is cheaper to build than the diff is worth.
DELTA_PARTS = 16
#: Services this small are sent whole when they change (a diff saves nothing).
SMALL_SERVICE = 16

K = TypeVar("K")
V = TypeVar("V")


# --- weights (see the module docstring) ----------------------------------------------------


def row_weight(row: EntryRow) -> int:
    weight = 32 + len(row[0]) + len(row[6]) + 8 * len(row[8])
    for k, v in row[7]:
        weight += 8 + len(k) + len(v)
    return weight if row[5] is None else weight + 128


def imported_weight(imp: ImportedService) -> int:
    svc = imp.service
    return 128 + 128 * len(svc.spiffe_ids) + sum(16 + len(r) for r in svc.routes)


def _routes_weight(texts: tuple[str, ...]) -> int:
    return 48 + sum(16 + len(t) for t in texts)


def _mark_weight(reason: str) -> int:
    return 96 + len(reason)


# --- catalog -------------------------------------------------------------------------------


def catalog_header(catalog: Catalog) -> CatalogHeader:
    return CatalogHeader(catalog.version, catalog.size, tuple(catalog.sources.values()))


def catalog_full(catalog: Catalog, epoch: str, seq: int, budget: int) -> list[CatalogPart]:
    """The whole catalog in parts of about ``budget`` bytes (a big service spans parts)."""
    parts: list[CatalogPart] = []
    chunk: list[tuple[ServiceName, tuple[EntryRow, ...]]] = []
    ejected: list[tuple[EndpointKey, str]] = []
    used = 0

    def flush() -> None:
        nonlocal chunk, ejected, used
        parts.append(CatalogPart(epoch, seq, len(parts), False, tuple(chunk), tuple(ejected)))
        chunk, ejected, used = [], [], 0

    for service, endpoints in catalog.services.items():
        entries: list[EntryRow] = []
        for entry in endpoints.values():
            row = entry_row(entry)
            weight = row_weight(row)
            if used + weight > budget and (entries or chunk):
                if entries:
                    chunk.append((service, tuple(entries)))
                    entries = []
                flush()
            entries.append(row)
            used += weight
        chunk.append((service, tuple(entries)))
    for key, reason in catalog.ejected.items():
        weight = _mark_weight(reason)
        if used + weight > budget and (chunk or ejected):
            flush()
        ejected.append((key, reason))
        used += weight
    parts.append(
        CatalogPart(
            epoch, seq, len(parts), True, tuple(chunk), tuple(ejected), catalog_header(catalog)
        )
    )
    return parts


def _service_patch(
    service: ServiceName,
    was: immutables.Map[EndpointKey, CatalogEntry] | None,
    now: immutables.Map[EndpointKey, CatalogEntry] | None,
) -> ServicePatch:
    if now is None:
        return ServicePatch(service, True)
    if was is None or len(now) <= SMALL_SERVICE:
        return ServicePatch(service, True, tuple(map(entry_row, now.values())))
    upserts, removals = map_diff(was, now)
    if len(upserts) + len(removals) >= len(now):
        return ServicePatch(service, True, tuple(map(entry_row, now.values())))
    return ServicePatch(service, False, tuple(entry_row(e) for _k, e in upserts), tuple(removals))


def _service_weight(patch: ServicePatch) -> int:
    return 48 + sum(row_weight(r) for r in patch.upserts) + 64 * len(patch.removals)


def _pieces(
    removals: tuple[K, ...],
    upserts: tuple[V, ...],
    weigh: Callable[[V], int],
    budget: int,
) -> Iterator[tuple[bool, tuple[K, ...], tuple[V, ...]]]:
    """A patch's removals then upserts in runs of about ``budget`` weight (a removal weighs
    64): ``(final, removals, upserts)`` per run, applied in turn."""
    items: list[tuple[K, None] | tuple[None, V]] = [
        *((key, None) for key in removals),
        *((None, value) for value in upserts),
    ]
    for chunk, final in _chunks(items, lambda kv: 64 if kv[1] is None else weigh(kv[1]), budget):
        yield (
            final,
            tuple(k for k, _v in chunk if k is not None),
            tuple(v for _k, v in chunk if v is not None),
        )


def _service_pieces(patch: ServicePatch, budget: int) -> Iterator[ServicePatch]:
    """``patch`` in pieces of about ``budget`` weight, applied in turn: the first keeps
    ``replace`` (it starts the service), the others add to it."""
    if _service_weight(patch) <= budget:
        yield patch
        return
    for index, (_final, removals, upserts) in enumerate(
        _pieces(patch.removals, patch.upserts, row_weight, budget)
    ):
        yield ServicePatch(patch.service, patch.replace and index == 0, upserts, removals)


def catalog_delta(
    old: Catalog, new: Catalog, epoch: str, base: int, seq: int, budget: int
) -> list[CatalogDelta] | None:
    """The catalog from ``old`` (the worker's ``base``) to ``new``, in messages of about
    ``budget`` bytes; None if heavier than :data:`DELTA_PARTS` of them."""
    cap = DELTA_PARTS * budget
    used = 0
    sources = tuple(new.sources.values()) if new.sources is not old.sources else None
    ejected = tuple(new.ejected.items()) if new.ejected is not old.ejected else None
    used += 128 * len(sources or ()) + sum(_mark_weight(r) for _k, r in ejected or ())
    patches: list[ServicePatch] = []
    olds, news = old.services, new.services
    if olds is not news:
        gone: Iterable[ServiceName] = ()
        kept = 0
        for service, endpoints in news.items():
            was = olds.get(service)
            if was is not None:
                kept += 1
            if was is endpoints:
                continue
            patch = _service_patch(service, was, endpoints)
            used += _service_weight(patch)
            if used > cap:
                return None
            patches.append(patch)
        if kept != len(olds):
            gone = [s for s in olds if s not in news]
        patches.extend(ServicePatch(s, True) for s in gone)
        if used + 48 * len(patches) > cap:
            return None
    if used > cap:
        return None
    pieces = [piece for patch in patches for piece in _service_pieces(patch, budget)]
    chunks = list(_chunks(pieces, _service_weight, budget))
    return [
        CatalogDelta(
            epoch,
            base,
            seq,
            new.version,
            new.size,
            sources if final else None,
            ejected if final else None,
            tuple(chunk),
            index,
            final,
        )
        for index, (chunk, final) in enumerate(chunks)
    ]


# --- import table --------------------------------------------------------------------------


def site_header(peer: PeerImports) -> SiteHeader:
    return SiteHeader(peer.site, peer.epoch, peer.version, peer.confirmed_at, peer.stale_since)


def _routes(peer: PeerImports) -> Routes:
    return tuple(peer.routes.items())


def imports_full(table: ImportTable, epoch: str, seq: int, budget: int) -> list[ImportsPart]:
    """The merged per-site view (``peers``) in parts of about ``budget`` bytes.  Replica
    copies stay in the supervisor: a worker reads the merged view only (see the feed)."""
    parts: list[ImportsPart] = []
    headers = tuple(site_header(p) for p in table.peers.values())
    services: list[tuple[str, tuple[ImportedService, ...]]] = []
    routes: list[tuple[str, Routes]] = []
    used = 96 * len(headers)

    def flush(final: bool) -> None:
        nonlocal services, routes, used
        first = headers if not parts else ()
        parts.append(
            ImportsPart(
                epoch, seq, len(parts), final, table.grace, first, tuple(services), tuple(routes)
            )
        )
        services, routes, used = [], [], 0

    for site, peer in table.peers.items():
        batch: list[ImportedService] = []
        for imp in peer.services.values():
            weight = imported_weight(imp)
            if used + weight > budget and (batch or services or routes):
                if batch:
                    services.append((site, tuple(batch)))
                    batch = []
                flush(False)
            batch.append(imp)
            used += weight
        if batch:
            services.append((site, tuple(batch)))
        texts: list[tuple[ServiceName, tuple[str, ...]]] = []
        for item in peer.routes.items():
            weight = _routes_weight(item[1])
            if used + weight > budget and (texts or services or routes):
                if texts:
                    routes.append((site, tuple(texts)))
                    texts = []
                flush(False)
            texts.append(item)
            used += weight
        if texts:
            routes.append((site, tuple(texts)))
    flush(True)
    return parts


def _site_weight(patch: SitePatch) -> int:
    return (
        96
        + sum(imported_weight(s) for s in patch.upserts)
        + 64 * len(patch.removals)
        + sum(_routes_weight(t) for _s, t in patch.routes or ())
    )


def _site_pieces(patch: SitePatch, budget: int) -> Iterator[SitePatch]:
    """``patch`` in pieces of about ``budget`` weight, as :func:`_service_pieces`; the routes
    (whole) ride with the last piece."""
    if _site_weight(patch) <= budget:
        yield patch
        return
    for index, (final, removals, upserts) in enumerate(
        _pieces(patch.removals, patch.upserts, imported_weight, budget)
    ):
        yield SitePatch(
            patch.header,
            patch.replace and index == 0,
            upserts,
            removals,
            patch.routes if final else None,
        )


def _site_patch(was: PeerImports | None, peer: PeerImports) -> SitePatch:
    header = site_header(peer)
    routes = _routes(peer) if was is None or was.routes is not peer.routes else None
    if was is None:
        return SitePatch(header, True, tuple(peer.services.values()), (), routes)
    if was.services is peer.services:
        return SitePatch(header, False, (), (), routes)
    upserts, removals = map_diff(was.services, peer.services)
    if len(upserts) + len(removals) >= len(peer.services):
        return SitePatch(header, True, tuple(peer.services.values()), (), routes)
    return SitePatch(header, False, tuple(v for _k, v in upserts), tuple(removals), routes)


def imports_delta(
    old: ImportTable, new: ImportTable, epoch: str, base: int, seq: int, budget: int
) -> list[ImportsDelta] | None:
    """The merged view from ``old`` to ``new`` by site, in messages of about ``budget``
    bytes; None if heavier than :data:`DELTA_PARTS` of them."""
    patches: list[SitePatch] = []
    removed: list[str] = []
    used = 0
    if old.peers is not new.peers:
        for site, peer in new.peers.items():
            was = old.peers.get(site)
            if was is peer:
                continue
            patch = _site_patch(was, peer)
            used += _site_weight(patch)
            if used > DELTA_PARTS * budget:
                return None
            patches.append(patch)
        removed = [s for s in old.peers if s not in new.peers]
    pieces = [piece for patch in patches for piece in _site_pieces(patch, budget)]
    chunks = list(_chunks(pieces, _site_weight, budget))
    return [
        ImportsDelta(
            epoch, base, seq, new.grace, tuple(chunk), tuple(removed) if final else (), index, final
        )
        for index, (chunk, final) in enumerate(chunks)
    ]


# --- failing marks -------------------------------------------------------------------------


def failing_full(marks: FailingMarks, epoch: str, seq: int, budget: int) -> list[Failing]:
    parts: list[Failing] = []
    for chunk, final in _chunks(marks.items(), lambda kv: _mark_weight(kv[1]), budget):
        parts.append(Failing(seq, tuple(chunk), epoch, len(parts), final))
    return parts


def failing_delta(
    old: FailingMarks, new: FailingMarks, epoch: str, base: int, seq: int, budget: int
) -> list[FailingDelta] | None:
    """The marks from ``old`` to ``new`` in one message; None if heavier than ``budget``
    (marks are few: a full snapshot in parts is what a mass failure gets)."""
    upserts, removals = map_diff(old, new)
    # Reasons are strings: an equal reason in a new object is no change.
    marked = tuple((k, r) for k, r in upserts if old.get(k) != r)
    if sum(_mark_weight(r) for _k, r in marked) + 64 * len(removals) > budget:
        return None
    return [FailingDelta(epoch, base, seq, marked, tuple(removals))]


def _chunks(
    items: Iterable[V], weigh: Callable[[V], int], budget: int
) -> Iterator[tuple[list[V], bool]]:
    """``items`` in lists of about ``budget`` weight; the last one (maybe empty) is final."""
    chunk: list[V] = []
    used = 0
    for item in items:
        weight = weigh(item)
        if used + weight > budget and chunk:
            yield chunk, False
            chunk, used = [], 0
        chunk.append(item)
        used += weight
    yield chunk, True
