"""The assembly's own control messages: a worker's start, its readiness, a config to apply.

Why beside :mod:`gateway.workers.messages`: those carry the snapshots and counters; these
carry what a worker runs -- the supervisor's config text and fleet document, so a worker
always applies exactly the version its supervisor applied (never what the file holds a
moment later), and the ports a port 0 was resolved to.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.consul_gateways.meta import GatewayInstance
from gateway.fleet.document import FleetDocument
from gateway.workers.snapshot_receiver import SnapshotVersion


@dataclass(frozen=True, slots=True)
class Start:
    """S->W, the answer to ``Hello``: what to run.

    ``clock_base`` is the supervisor's ``trio.current_time() - time.perf_counter()``: the
    worker's clock offset is its own base minus this one (the times in the import table are
    the supervisor's trio clock)."""

    ports: dict[str, int]
    clock_base: float
    text: str
    fleet: FleetDocument | None


@dataclass(frozen=True, slots=True)
class Ready:
    """W->S: the worker applied its first snapshot and its listeners accept."""


@dataclass(frozen=True, slots=True)
class Apply:
    """S->W: the supervisor applied this config text (and fleet document): apply it too.

    ``snapshot``: the feed's version once the supervisor had applied it.  The catalog of the
    new sources (and the marks and imports the reload changed) reach a worker as snapshots,
    not with the text, so the worker answers :class:`~gateway.workers.messages.ReloadDone`
    only once it holds that version too: a reload answered "applied" routes by the new
    catalog in every worker (None: answer as soon as the text is applied)."""

    trigger: str
    text: str
    fleet: FleetDocument | None
    snapshot: SnapshotVersion | None = None


#: One endpoint a worker's outlier detection ejected: its service's name and namespace, its
#: address and port, the seconds its ejection has to run, why.  A remaining time, not an end
#: time: each process's trio clock has its own offset, and a duration means the same in
#: both.  Plain values, not a dataclass: a report of thousands pickles ten times faster.
EjectionEntry = tuple[str, str, str, int, float, str]


@dataclass(frozen=True, slots=True)
class Ejections:
    """W->S: the ejections in force in this worker now (all of them: it replaces the last
    report).  At most :data:`gateway.workers.ejections.MAX_REPORTED` entries, the longest
    first; ``dropped`` counts those left out."""

    entries: tuple[EjectionEntry, ...]
    dropped: int = 0


@dataclass(frozen=True, slots=True)
class Redial:
    """S->W: the supervisor's link to these peer sites just came up: a worker whose own link
    to one of them is down dials it now instead of at the end of its backoff."""

    sites: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Gateways:
    """S->W: the peers' gateways the supervisor found in Consul (``[[peers]] discover =
    "consul"``): the worker links to the same replicas."""

    instances: tuple[GatewayInstance, ...]
