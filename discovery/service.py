"""The catalog service: run every configured source and fold their events into one catalog.

Theory of operation
-------------------
``serve_catalog`` owns one nursery.  In it:

* one *supervisor* per configured source runs that source's ``serve_<kind>_source`` (looked up
  in :mod:`discovery.sources.registry`) with its own clone of the event channel.  A source that
  fails with a :class:`~foundation.errors.DiscoveryError` (or an ``OSError``: sockets, threads)
  is logged, marked stale in the catalog (``SourceStale``: its endpoints stay listed and
  routable for its grace) and restarted after a jittered exponential backoff; the backoff
  resets once a run has lasted ``HEALTHY_RUN_S``.  Any other exception is a bug or an
  unusable config and propagates: failing loudly beats serving a silently frozen view.  A source
  that returns (static) has said all it will say.
* one *applier* reads the ONE bounded channel, gathers what arrives within ``COALESCE_S`` of
  the first event (up to ``MAX_BATCH`` events), applies it with
  :func:`discovery.catalog.apply_many` as one step, runs :func:`discovery.catalog.expire` (it
  also wakes up by itself at the next grace deadline), and publishes the new snapshot to the
  :class:`~discovery.watch.Watch` if anything changed.

The data path never waits for the control plane: requests share this event loop, and one apply
of a big batch (a 100k-endpoint resync when Consul reconnects) is hundreds of milliseconds of
CPU.  So the applier runs the sliced form of the core
(:func:`~discovery.catalog.apply_many_steps`) with a checkpoint after every ``slice_items``
items of work, resting as long as the slice took (:func:`~discovery.pacing.paced`): no task
step of the applier handles more than that many catalog items, and requests in flight run
between the slices.  Readers keep seeing the previous snapshot until the new one is complete
and published.  The service also keeps the catalog's heap out of Python's full GC passes
(:class:`~discovery.heap.HeapKeeper`, installed for the service's lifetime: freeze after a
slow pass, reset CPython's GC schedule as soon as the loop gets to it), which would otherwise
walk the whole catalog again and again, each time a stall as long as the resync itself.

Back-pressure: the channel is bounded; a source that outruns the applier blocks in ``send``
(zeroconf and Consul adapters never block their own threads on it).  The applier does pure CPU
work only, so it never waits on anything but the channel and the expiry deadline.  Subscribers
are decoupled by the watch: a slow router never slows discovery.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable, Sequence
from typing import Any

import trio

from discovery.backoff import Backoff
from discovery.catalog import apply_many_steps, expire_steps, next_expiry
from discovery.diff import Diff
from discovery.events import Event, SourceStale
from discovery.heap import HeapKeeper
from discovery.merge import Policy
from discovery.pacing import paced
from discovery.snapshot import Catalog
from discovery.sources.config import SourceConfig, precedence
from discovery.sources.registry import ServeSource, serve_function
from discovery.steps import SLICE_ITEMS, check_slice
from discovery.watch import Watch
from foundation.errors import DiscoveryError

log = logging.getLogger(__name__)

EVENT_CHANNEL_CAPACITY = 1024
MAX_BATCH = 4096
COALESCE_S = 0.005
RESTART_BACKOFF = Backoff(base_s=0.5, cap_s=30.0, floor_s=0.1)
HEALTHY_RUN_S = 60.0
MAX_LOGGED_REJECTIONS = 5
RESTARTABLE: tuple[type[Exception], ...] = (DiscoveryError, OSError)


async def serve_catalog(
    source_configs: Sequence[SourceConfig],
    watch: Watch[Catalog],
    *,
    clock: Callable[[], float] = trio.current_time,
    policy: Policy | None = None,
    rng: Callable[[], float] = random.random,
    channel_capacity: int = EVENT_CHANNEL_CAPACITY,
    resolve: Callable[[str], ServeSource] = serve_function,
    slice_items: int = SLICE_ITEMS,
    heap: HeapKeeper | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the sources and publish catalog snapshots into ``watch`` until cancelled.

    Every configured kind is resolved before anything starts, so a missing source module is a
    :class:`~discovery.sources.registry.SourceUnavailable` right away.  ``started`` is called
    once every source has started (or failed once and is being retried).  Precedence is the
    order of ``source_configs`` unless ``policy`` says otherwise.  ``resolve`` maps a kind to
    its serve function (the registry; tests pass their own sources).  ``slice_items`` bounds
    the catalog items one step of the event loop may process; ``heap`` decides when to freeze
    the heap (default: a :class:`~discovery.heap.HeapKeeper` with its default pass budget).
    """
    check_slice(slice_items)
    policy = policy if policy is not None else Policy.from_sources(precedence(source_configs))
    serves = [(config, resolve(config.kind)) for config in source_configs]
    send, receive = trio.open_memory_channel[Event | _Flush](channel_capacity)
    keeper = heap if heap is not None else HeapKeeper()
    with send, receive, keeper:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_apply_loop, receive, watch, policy, clock, slice_items)
            for config, serve in serves:
                await nursery.start(_supervise, config, serve, send.clone(), clock, rng)
            # What the sources said while starting is in the catalog before we report
            # started.
            flush = _Flush()
            await send.send(flush)
            await flush.done.wait()
            task_status.started()


class _Flush:
    """A marker through the event channel: set once everything sent before it is applied."""

    def __init__(self) -> None:
        self.done = trio.Event()


class _FirstStart:
    """Forwards the first ``started()`` of any run of a source to the supervisor's starter."""

    def __init__(self, outer: trio.TaskStatus[None]) -> None:
        self._outer = outer
        self.done = False

    def started(self, value: Any = None) -> None:
        if not self.done:
            self.done = True
            self._outer.started()


async def _supervise(
    config: SourceConfig,
    serve: ServeSource,
    send: trio.MemorySendChannel[Event | _Flush],
    clock: Callable[[], float],
    rng: Callable[[], float],
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    first = _FirstStart(task_status)
    attempt = 0
    async with send:
        while True:
            began = clock()
            failure: BaseException | None = None
            try:
                async with send.clone() as run_send:
                    await serve(config, run_send, task_status=first)
            except* RESTARTABLE as group:
                failure = group
            if failure is None:
                log.debug("source %s finished (nothing more to report)", config.name)
                first.started()
                return
            first.started()  # a failing source must not hold up the gateway's start
            if clock() - began >= HEALTHY_RUN_S:
                attempt = 0
            delay = RESTART_BACKOFF.delay(attempt, min(max(rng(), 0.0), 0.999999))
            attempt += 1
            reason = _describe(failure)
            log.warning(
                "source %s (%s) failed: %s; restart %d in %.2fs",
                config.name,
                config.kind,
                reason,
                attempt,
                delay,
            )
            await send.send(SourceStale(config.name, f"source failed: {reason}", clock()))
            await trio.sleep(delay)


def _describe(failure: BaseException) -> str:
    """One line naming the leaf errors (sources may raise from their own nurseries)."""
    leaves: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            leaves.append(exc)

    walk(failure)
    text = "; ".join(f"{type(e).__name__}: {e}" for e in leaves[:3])
    return text[:500]


async def _apply_loop(
    receive: trio.MemoryReceiveChannel[Event | _Flush],
    watch: Watch[Catalog],
    policy: Policy,
    clock: Callable[[], float],
    slice_items: int,
) -> None:
    catalog = watch.latest
    while True:
        batch: list[Event | _Flush] = []
        due = next_expiry(catalog)
        # ``due`` is on the catalog clock; convert to Trio's clock for the deadline.
        deadline = math.inf if due is None else trio.current_time() + max(0.0, due - clock())
        with trio.move_on_at(deadline):
            batch.append(await receive.receive())
        if batch:
            # Coalesce a burst (a source replaying 10 000 instances) into one step and one
            # snapshot: at most COALESCE_S of extra latency, far below any source's own.
            with trio.move_on_after(COALESCE_S):
                while len(batch) < MAX_BATCH:
                    batch.append(await receive.receive())
        now = clock()
        events = [e for e in batch if not isinstance(e, _Flush)]
        new, diff = await paced(
            apply_many_steps(catalog, events, now=now, policy=policy, slice_items=slice_items)
        )
        _log_diff(new, diff)
        new, expired = await paced(expire_steps(new, now, policy=policy, slice_items=slice_items))
        _log_diff(new, expired)
        if new is not catalog:
            catalog = new
            watch.publish(catalog)
        for marker in batch:
            if isinstance(marker, _Flush):
                marker.done.set()


def _log_diff(catalog: Catalog, diff: Diff) -> None:
    for rejection in diff.rejected[:MAX_LOGGED_REJECTIONS]:
        log.warning(
            "source %s: refused %s: %s",
            rejection.source,
            rejection.key if rejection.key is not None else "event",
            rejection.reason,
        )
    if len(diff.rejected) > MAX_LOGGED_REJECTIONS:
        more = len(diff.rejected) - MAX_LOGGED_REJECTIONS
        log.warning("... and %d more refused endpoints/events in this batch", more)
    for name in sorted(diff.sources_changed):
        state = catalog.source(name)
        if state is None:
            continue
        if state.expired:
            log.warning("source %s: stale grace ran out; its endpoints are withdrawn", name)
        elif state.stale:
            log.warning("source %s is stale (%s); serving its last view", name, state.reason)
    if not diff.empty:
        log.debug(
            "catalog v%d: +%d ~%d -%d (%d endpoints)",
            diff.version,
            len(diff.added),
            len(diff.updated),
            len(diff.removed),
            len(catalog),
        )
