"""Outlier ejections in worker mode: each worker's, folded at the supervisor.

Why: passive outlier detection runs where the requests are -- in each worker, its own
:class:`~gateway.cluster.outlier_detector.OutlierDetector` fed by the requests it served --
but ``/catalog``, ``isthmus catalog`` and the export to peers are the supervisor's.  So each
worker reports the ejections in force in it (:func:`report_ejections`: the whole set on each
change, coalesced, at most one message per :data:`REPORT_INTERVAL_S`), and the supervisor
keeps the last set of each worker (:class:`WorkerEjections`, dropped when that worker's
channel ends) and hands their union to its own detector's
:meth:`~gateway.cluster.outlier_detector.OutlierDetector.set_reported`: an endpoint ejected by
any worker shows ejected, with that worker's reason, until no worker ejects it any more.

The workers keep routing on their own detector only: a worker that did not see an endpoint
fail still sends it its share, as each process in a single-process fleet would.  That keeps
the reports one-way and the detection per process, as it is documented.

Times cross the process boundary as *remaining* seconds: each process's trio clock has its
own offset.  The supervisor turns them into its own clock on arrival; a report delayed in
the channel makes an ejection end that much later there, never earlier.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Hashable

import immutables
import trio

from discovery.model import EndpointKey, ServiceName
from discovery.watch import Watch, WatchClosed
from gateway.cluster.outlier import EndpointHealth
from gateway.cluster.outlier_detector import Ejections as Ejected
from gateway.cluster.outlier_detector import merge_ejections
from gateway.workers.channel import ChannelClosed
from gateway.workers.control import EjectionEntry, Ejections

__all__ = [
    "MAX_REPORTED",
    "REPORT_INTERVAL_S",
    "WorkerEjections",
    "from_report",
    "report",
    "report_ejections",
]

log = logging.getLogger("isthmus.workers")

#: Entries in one report at most (each ~110 bytes pickled: a full report is ~1.1 MB).
MAX_REPORTED = 10_000
#: A worker sends at most one report per this many seconds (changes meanwhile coalesce).
REPORT_INTERVAL_S = 0.25
#: The longest remaining time the supervisor believes (the config caps ejections far lower).
MAX_REMAINING_S = 86_400.0
#: Characters of a reason the supervisor keeps.
MAX_REASON = 256

NONE: Ejected = immutables.Map()


def report(ejections: Ejected, now: float, *, limit: int = MAX_REPORTED) -> Ejections:
    """The message that tells the supervisor the ejections in force at ``now`` (the longest
    ``limit`` of them)."""
    live: list[EjectionEntry] = [
        (k.service.name, k.service.namespace, k.address, k.port, h.ejected_until - now, h.reason)
        for k, h in ejections.items()
        if h.ejected_until is not None and h.ejected_until > now
    ]
    if len(live) > limit:
        live.sort(key=lambda e: e[4], reverse=True)
    return Ejections(entries=tuple(live[:limit]), dropped=max(0, len(live) - limit))


def _entry(entry: object) -> tuple[EndpointKey, float, str] | None:
    """One entry of a report, checked (both ends are this program, but a report is input)."""
    if not isinstance(entry, tuple) or len(entry) != 6:
        return None
    name, namespace, address, port, remaining, reason = entry
    if not (isinstance(name, str) and isinstance(namespace, str) and isinstance(address, str)):
        return None
    if not isinstance(port, int) or not isinstance(remaining, float | int):
        return None
    if not math.isfinite(remaining) or remaining <= 0:
        return None
    why = reason[:MAX_REASON] if isinstance(reason, str) else ""
    key = EndpointKey(ServiceName(name, namespace), address, port)
    return key, min(float(remaining), MAX_REMAINING_S), why


def from_report(message: Ejections, now: float, *, limit: int = MAX_REPORTED) -> Ejected:
    """A worker's report as ejections on the supervisor's clock (``now``); entries that are
    malformed, over ``limit`` or already ended are left out."""
    out: dict[EndpointKey, EndpointHealth] = {}
    for entry in message.entries[:limit]:
        checked = _entry(entry)
        if checked is None:
            continue
        key, remaining, reason = checked
        until = now + remaining
        have = out.get(key)
        if have is None or (have.ejected_until or 0.0) < until:
            out[key] = EndpointHealth(ejections=1, ejected_until=until, reason=reason)
    return immutables.Map(out)


class WorkerEjections:
    """The supervisor's last report of each worker, and their union (pure: takes ``now``).

    A worker is keyed by what tells one process from its replacement (the supervisor uses
    ``(index, pid)``), so the end of a dead worker's channel, however late, never drops the
    report of the worker that replaced it."""

    def __init__(self) -> None:
        self._by_worker: dict[Hashable, Ejected] = {}

    def update(self, worker: Hashable, message: Ejections, now: float) -> Ejected:
        """``worker`` reported ``message`` (its whole set): the union now."""
        if message.dropped:
            log.warning(
                "worker %s has %d ejections more than it can report (%d)",
                worker,
                message.dropped,
                MAX_REPORTED,
            )
        got = from_report(message, now)
        if got:
            self._by_worker[worker] = got
        else:
            self._by_worker.pop(worker, None)
        return self.union(now)

    def drop(self, worker: Hashable, now: float) -> Ejected:
        """``worker``'s channel ended (it exited): its ejections go; the union now."""
        self._by_worker.pop(worker, None)
        return self.union(now)

    def union(self, now: float) -> Ejected:
        """Every worker's ejections still in force at ``now``, the latest end per endpoint
        (ended ones are forgotten here, so the sets stay bounded by what is in force)."""
        for index, held in list(self._by_worker.items()):
            if any(not h.ejected(now) for h in held.values()):
                kept = immutables.Map({k: h for k, h in held.items() if h.ejected(now)})
                if kept:
                    self._by_worker[index] = kept
                else:
                    del self._by_worker[index]
        return merge_ejections(*self._by_worker.values())

    def __len__(self) -> int:
        """How many workers have ejections in force (as last reported)."""
        return len(self._by_worker)


Send = Callable[[object], Awaitable[None]]


async def report_ejections(
    send: Send,
    ejections: Watch[Ejected],
    *,
    interval_s: float = REPORT_INTERVAL_S,
    clock: Callable[[], float] = trio.current_time,
) -> None:
    """A worker's reporter: send the ejections in force on every change of ``ejections``
    (the worker's own detector's), at most one report per ``interval_s``: what changes while
    it waits goes in the next one.  Ends quietly when the channel does (the worker's control
    loop sees that too and ends the worker)."""
    sent: Ejected = NONE  # a new worker's set at the supervisor is empty
    with contextlib.suppress(ChannelClosed, WatchClosed):
        while True:
            seen, current = ejections.count, ejections.latest
            if current != sent:
                await send(report(current, clock()))
                sent = current
                await trio.sleep(interval_s)  # then look again: what changed meanwhile
                continue
            await ejections.wait_newer(seen)
