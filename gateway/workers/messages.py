"""What the supervisor and its workers say to each other on the control channel.

Every message is a frozen dataclass of plain values (tuples, not maps: a pickle of a tuple is
smaller and faster than one of an ``immutables.Map``, and the receiver rebuilds the maps it
keeps).  Directions: ``S->W`` supervisor to worker, ``W->S`` worker to supervisor.

Snapshots (see :mod:`gateway.workers.snapshot`) have three parts, each versioned on its own
within the feed's ``epoch`` (a random token per supervisor run): the catalog, the import table
and the failing marks.  Each part arrives either as a *full* snapshot, split into numbered
parts applied together at the one marked ``final``, or as a *delta* from ``base`` to ``seq``
that the worker applies only when it holds exactly ``base`` (else it answers
:class:`Resync`).  Times inside (source staleness, import freshness) are the supervisor's trio
clock: the worker shifts them by its clock offset, see :class:`Welcome`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from discovery.model import Endpoint, EndpointKey, Protocol, ServiceName
from discovery.snapshot import CatalogEntry, SourceState
from foundation.spiffe_id import SpiffeId
from overlay.federation.import_ import ImportedService

# --- the handshake -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """W->S, first message: which worker this is."""

    index: int
    pid: int


@dataclass(frozen=True, slots=True)
class Welcome:
    """S->W, the answer to :class:`Hello`: ``clock_base`` is the supervisor's
    ``trio.current_time() - time.perf_counter()`` (see :func:`gateway.workers.snapshot.
    clock_base`); the worker's offset is its own base minus this one."""

    clock_base: float


@dataclass(frozen=True, slots=True)
class Ports:
    """S->W: the real port of every listener whose configured port was 0 (by listener name)."""

    ports: dict[str, int]


# --- catalog snapshots ---------------------------------------------------------------------

#: A :class:`~discovery.snapshot.CatalogEntry` of a known service, flattened: address, port,
#: protocol, healthy, weight, SPIFFE ID, locality, metadata, sources.  Why: pickling frozen
#: slotted dataclasses runs Python code per object (about 10 us per entry, both ways); plain
#: tuples pickle in C, 8 times faster for a 100k-endpoint snapshot, and a third smaller.
EntryRow = tuple[
    str,
    int,
    Protocol,
    bool,
    int,
    SpiffeId | None,
    str,
    tuple[tuple[str, str], ...],
    tuple[str, ...],
]


def entry_row(entry: CatalogEntry) -> EntryRow:
    ep = entry.endpoint
    return (
        ep.address,
        ep.port,
        ep.protocol,
        ep.healthy,
        ep.weight,
        ep.spiffe_id,
        ep.locality,
        ep.metadata,
        entry.sources,
    )


def entry_of(service: ServiceName, row: EntryRow) -> tuple[EndpointKey, CatalogEntry]:
    """The entry (and its key) that :func:`entry_row` flattened."""
    address, port, protocol, healthy, weight, spiffe_id, locality, metadata, sources = row
    endpoint = Endpoint(
        service, address, port, protocol, healthy, weight, spiffe_id, locality, metadata
    )
    return EndpointKey(service, address, port), CatalogEntry(endpoint, sources)


@dataclass(frozen=True, slots=True)
class CatalogHeader:
    """The whole-catalog fields (``sources`` whole: there are a few)."""

    version: int
    size: int
    sources: tuple[SourceState, ...]


@dataclass(frozen=True, slots=True)
class CatalogPart:
    """S->W, one part of a full catalog snapshot; a service may span several parts (its
    entries are added up), and so may the gateway's ejections.  ``header`` is on the
    ``final`` part, which applies them all."""

    epoch: str
    seq: int
    index: int
    final: bool
    services: tuple[tuple[ServiceName, tuple[EntryRow, ...]], ...]
    ejected: tuple[tuple[EndpointKey, str], ...] = ()
    header: CatalogHeader | None = None


@dataclass(frozen=True, slots=True)
class ServicePatch:
    """One service's change: ``replace`` means ``upserts`` is the whole service (an empty
    one removes it); else upsert and remove these endpoints."""

    service: ServiceName
    replace: bool
    upserts: tuple[EntryRow, ...] = ()
    removals: tuple[EndpointKey, ...] = ()


@dataclass(frozen=True, slots=True)
class CatalogDelta:
    """S->W, the catalog from ``base`` to ``seq``: the header fields always, ``sources`` /
    ``ejected`` only when they changed (None: unchanged), and the changed services.

    A delta heavier than one part comes as several messages (``index`` 0, 1, ...), each with
    some of the service patches, applied in turn to a copy that is published at ``final``:
    each message is one bounded step of the worker's loop, and no reader sees half of it."""

    epoch: str
    base: int
    seq: int
    version: int
    size: int
    sources: tuple[SourceState, ...] | None
    ejected: tuple[tuple[EndpointKey, str], ...] | None
    services: tuple[ServicePatch, ...]
    index: int = 0
    final: bool = True


# --- import-table snapshots ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SiteHeader:
    """A peer site's :class:`~overlay.federation.import_.PeerImports` fields but its maps."""

    site: str
    epoch: str
    version: int
    confirmed_at: float
    stale_since: float | None


Routes = tuple[tuple[ServiceName, tuple[str, ...]], ...]


@dataclass(frozen=True, slots=True)
class ImportsPart:
    """S->W, one part of a full import table: site headers, then chunks of each site's
    services and routes (added up across parts); ``final`` applies them with ``grace``."""

    epoch: str
    seq: int
    index: int
    final: bool
    grace: float
    sites: tuple[SiteHeader, ...] = ()
    services: tuple[tuple[str, tuple[ImportedService, ...]], ...] = ()
    routes: tuple[tuple[str, Routes], ...] = ()


@dataclass(frozen=True, slots=True)
class SitePatch:
    """One peer site's change: its header, then either its whole services (``replace``) or
    upserts and removals; ``routes`` whole when they changed (None: unchanged)."""

    header: SiteHeader
    replace: bool
    upserts: tuple[ImportedService, ...] = ()
    removals: tuple[ServiceName, ...] = ()
    routes: Routes | None = None


@dataclass(frozen=True, slots=True)
class ImportsDelta:
    """S->W, the import table from ``base`` to ``seq``: changed sites and removed ones; in
    several messages applied together at ``final``, as :class:`CatalogDelta`."""

    epoch: str
    base: int
    seq: int
    grace: float
    sites: tuple[SitePatch, ...]
    removed: tuple[str, ...] = ()
    index: int = 0
    final: bool = True


# --- failing marks (active health checks) --------------------------------------------------


@dataclass(frozen=True, slots=True)
class Failing:
    """S->W, the failing marks whole (possibly in parts: applied at ``final``)."""

    version: int
    marks: tuple[tuple[EndpointKey, str], ...]
    epoch: str = ""
    index: int = 0
    final: bool = True


@dataclass(frozen=True, slots=True)
class FailingDelta:
    """S->W, the failing marks from ``base`` to ``version``."""

    epoch: str
    base: int
    version: int
    marked: tuple[tuple[EndpointKey, str], ...]
    cleared: tuple[EndpointKey, ...]


@dataclass(frozen=True, slots=True)
class Resync:
    """W->S: the worker cannot apply a delta (a gap, another epoch): send everything whole."""

    reason: str


# --- reloads, fleet, stats, shutdown -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reload:
    """S->W: reload the configuration (``trigger``: what asked for it, for the log)."""

    trigger: str


@dataclass(frozen=True, slots=True)
class ApplyFleet:
    """S->W: apply this fleet document (JSON text, as the supervisor accepted it)."""

    document_json: str


@dataclass(frozen=True, slots=True)
class ReloadDone:
    """W->S: how a :class:`Reload` or :class:`ApplyFleet` went (the reload's outcome JSON)."""

    outcome: dict[str, Any]


@dataclass(frozen=True, slots=True)
class StatsRequest:
    """S->W: send your counters (for /metrics, /links, status); with ``routes``, your route
    view too (for ``/routes``: only on that request, as it grows with the routes)."""

    request_id: int
    routes: bool = False


@dataclass(frozen=True, slots=True)
class StatsReply:
    """W->S: the answer to :class:`StatsRequest` with the same ``request_id``."""

    request_id: int
    stats: object


@dataclass(frozen=True, slots=True)
class Drain:
    """S->W: stop accepting, finish what is in flight within ``grace_s``, then exit."""

    grace_s: float


__all__ = [
    "ApplyFleet",
    "CatalogDelta",
    "CatalogHeader",
    "CatalogPart",
    "Drain",
    "EntryRow",
    "Failing",
    "FailingDelta",
    "Hello",
    "ImportsDelta",
    "ImportsPart",
    "Ports",
    "Reload",
    "ReloadDone",
    "Resync",
    "Routes",
    "ServicePatch",
    "SiteHeader",
    "SitePatch",
    "StatsReply",
    "StatsRequest",
    "Welcome",
    "entry_of",
    "entry_row",
]
