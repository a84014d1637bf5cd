"""Versioned snapshots from the supervisor to its workers (sans-IO, both ends).

The supervisor owns discovery, health checks and federation; each worker routes with copies
of three of their results: the catalog, the import table and the failing marks.  This module
turns those values into messages (:class:`SnapshotFeed`) and back (:class:`SnapshotReceiver`).

Theory of operation
-------------------
Each part has a sequence number within the feed's ``epoch`` (random per feed), bumped when a
*different object* is published (the values are immutable, so identity is change).  A worker's
state is a :class:`SnapshotVersion`.  :meth:`SnapshotFeed.messages_for` brings a worker from
its version to the current one:

* **Deltas when it is close.**  The feed keeps the value at its last *step* (an anchor) and a
  short history of steps.  When a worker asks and the value moved since the anchor, the delta
  anchor -> current is computed once (diffing persistent maps by identity, see
  :mod:`gateway.workers.snapshot_encode`), kept in the history and handed to every worker at
  the anchor; several publishes between two asks make one step, so a burst costs one diff.
  A worker a few steps behind gets the chain of steps.  A delta heavier than ``budget``
  bytes comes in several messages (see :mod:`gateway.workers.snapshot_encode`).
* **A full snapshot otherwise** (a new worker, another epoch, a version older than the
  history, a delta too heavy), split into parts of about ``budget`` bytes, built once per
  version and shared by every worker that needs it.

The receiver applies a delta only when it holds exactly its ``base``; a gap or another epoch
answers :class:`NeedResync` (once, until a full snapshot of that part arrives), and the
worker sends :class:`~gateway.workers.messages.Resync`.  Parts must come in order; a full
snapshot's are gathered and the one marked ``final`` applies them all at once, a delta's are
applied in turn to a private copy that the ``final`` one makes current, so a reader never
sees half a snapshot or half a delta.

What the worker rebuilds is what the data plane reads: a :class:`~discovery.snapshot.Catalog`
with ``services`` (an unchanged service keeps its map object, so the route fold's identity
diff stays incremental), ``sources``, ``ejected``, ``version`` and ``size`` -- not ``views``
(per-source reports, only read by the admin API's provenance, which runs in the supervisor);
an :class:`~overlay.federation.import_.ImportTable` with the merged per-site ``peers`` and no
replica copies (expiry and replica merging stay in the supervisor, whose changes arrive as
deltas); the failing marks.  Times (source staleness, import freshness) are shifted by the
worker's clock offset, so its own ``trio.current_time()`` compares with them correctly.
"""

from __future__ import annotations

import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

import trio

from discovery.snapshot import Catalog
from gateway.cluster.health_checker import Failing as FailingMarks
from gateway.workers.channel import encode
from gateway.workers.snapshot_encode import (
    DEFAULT_BUDGET,
    catalog_delta,
    catalog_full,
    failing_delta,
    failing_full,
    imports_delta,
    imports_full,
)
from gateway.workers.snapshot_receiver import (
    NO_MARKS,
    SNAPSHOT_MESSAGES,
    Change,
    NeedResync,
    SnapshotReceiver,
    SnapshotVersion,
)
from overlay.federation.import_ import ImportTable

T = TypeVar("T")
#: Steps a track keeps.  Why so many: under churn every ask of the fastest worker is a step,
#: and a worker busy for a while (applying a large delta) must not fall out of the history:
#: past it, it gets the whole value -- ~0.5 s to apply at 100k endpoints, during which it
#: falls behind again (bench_stall --workers 2: the catalog sent whole 17 times under 1 %
#: churn with 8 steps, never after start-up with 64).  Each step is one delta (~50 KiB for
#: a 1 % change of 100k endpoints).  The supervisor also waits a moment before each send
#: (``SNAPSHOT_COALESCE_S``), so a burst of changes is one step.
DEFAULT_HISTORY = 64


def clock_base() -> float:
    """This process's trio clock minus the system-wide monotonic clock (``perf_counter`` is
    ``CLOCK_MONOTONIC`` on Linux, the clock trio's own is offset from).  The worker's
    ``clock_offset`` is its base minus the supervisor's."""
    return trio.current_time() - time.perf_counter()


Diff = Callable[[T, T, int, int], Sequence[object] | None]
Full = Callable[[T, int], list[object]]


class _Track(Generic[T]):
    """One part's current value, its anchor, step history and cached full snapshot."""

    def __init__(self, value: T, diff: Diff[T], full: Full[T], history: int) -> None:
        self.value = value
        self.seq = 0
        self._diff = diff
        self._full_of = full
        self._anchor: tuple[int, T] = (0, value)
        #: (from, to, the delta's messages; None: too heavy, a full snapshot instead)
        self._steps: deque[tuple[int, int, Sequence[object] | None]] = deque(maxlen=history)
        self._full: tuple[int, list[object]] | None = None
        #: Work counters (the tests and the benchmark read them).
        self.deltas_built = 0
        self.fulls_built = 0

    def publish(self, value: T) -> None:
        if value is not self.value:
            self.value = value
            self.seq += 1

    def messages(self, held: int | None) -> list[object]:
        if held == self.seq:
            return []
        anchor_seq, anchor_value = self._anchor
        if anchor_seq != self.seq:
            self._steps.append(
                (anchor_seq, self.seq, self._diff(anchor_value, self.value, anchor_seq, self.seq))
            )
            self._anchor = (self.seq, self.value)
            self.deltas_built += 1
        if held is not None:
            chain: list[object] = []
            at = held
            for start, end, delta in self._steps:
                if start == at and delta is not None:
                    chain.extend(delta)
                    at = end
            if at == self.seq:
                return chain
        if self._full is None or self._full[0] != self.seq:
            self._full = (self.seq, self._full_of(self.value, self.seq))
            self.fulls_built += 1
        return list(self._full[1])

    def held(self) -> list[object]:
        """The messages this track keeps (its steps and its full snapshot)."""
        out = [m for _s, _e, delta in self._steps if delta is not None for m in delta]
        return out + (self._full[1] if self._full is not None else [])


class SnapshotFeed:
    """The supervisor's side: the current values and the messages each worker needs.

    ``publish_*`` only keep the new value (cheap, call it on every change); the work happens
    in :meth:`messages_for`, once per version whatever the number of workers (and in
    :meth:`frames_for`, which pickles each message once too).
    """

    def __init__(
        self,
        *,
        catalog: Catalog | None = None,
        imports: ImportTable | None = None,
        failing: FailingMarks = NO_MARKS,
        budget: int = DEFAULT_BUDGET,
        history: int = DEFAULT_HISTORY,
        epoch: str | None = None,
    ) -> None:
        if budget < 1024:
            raise ValueError(f"budget must be at least 1024 bytes, got {budget}")
        self.epoch = epoch if epoch is not None else secrets.token_hex(6)
        self.budget = budget
        e = self.epoch
        self.catalog = _Track[Catalog](
            catalog if catalog is not None else Catalog(),
            lambda old, new, base, seq: catalog_delta(old, new, e, base, seq, budget),
            lambda value, seq: list(catalog_full(value, e, seq, budget)),
            history,
        )
        self.imports = _Track[ImportTable](
            imports if imports is not None else ImportTable(grace=0.0),
            lambda old, new, base, seq: imports_delta(old, new, e, base, seq, budget),
            lambda value, seq: list(imports_full(value, e, seq, budget)),
            history,
        )
        self.failing = _Track[FailingMarks](
            failing,
            lambda old, new, base, seq: failing_delta(old, new, e, base, seq, budget),
            lambda value, seq: list(failing_full(value, e, seq, budget)),
            history,
        )
        self._frames: dict[int, tuple[object, bytes]] = {}

    def publish_catalog(self, catalog: Catalog) -> None:
        self.catalog.publish(catalog)

    def publish_imports(self, table: ImportTable, now: float) -> None:
        """``now`` (the supervisor's clock): copies already past their grace are dropped
        here, so a worker never receives a site it would have to expire at once."""
        self.imports.publish(table.expire(now))

    def publish_failing(self, failing: FailingMarks) -> None:
        self.failing.publish(failing)

    @property
    def version(self) -> SnapshotVersion:
        """The current state (what a worker holds after :meth:`messages_for`)."""
        return SnapshotVersion(self.epoch, self.catalog.seq, self.imports.seq, self.failing.seq)

    def messages_for(self, worker_version: SnapshotVersion | None) -> list[object]:
        """What brings a worker at ``worker_version`` (None: new) to :attr:`version`."""
        v = (
            worker_version
            if worker_version is not None and worker_version.epoch == self.epoch
            else None
        )
        return [
            *self.catalog.messages(None if v is None else v.catalog),
            *self.imports.messages(None if v is None else v.imports),
            *self.failing.messages(None if v is None else v.failing),
        ]

    def frames_for(self, worker_version: SnapshotVersion | None) -> list[bytes]:
        """:meth:`messages_for` as frames for :meth:`~gateway.workers.channel.Channel.
        send_encoded`: each message is pickled once, however many workers it goes to."""
        frames = []
        for message in self.messages_for(worker_version):
            hit = self._frames.get(id(message))
            if hit is None or hit[0] is not message:
                hit = self._frames[id(message)] = (message, encode(message))
            frames.append(hit[1])
        live = {id(m) for track in (self.catalog, self.imports, self.failing) for m in track.held()}
        for key in [k for k in self._frames if k not in live]:
            del self._frames[key]
        return frames


__all__ = [
    "SNAPSHOT_MESSAGES",
    "Change",
    "NeedResync",
    "SnapshotFeed",
    "SnapshotReceiver",
    "SnapshotVersion",
    "clock_base",
]
