"""Keep the gateway's long-lived heap out of Python's cyclic-GC passes.

Why: CPython's full (generation 2) collection walks every GC-tracked object that is not
frozen.  A 100k-endpoint catalog is millions of such objects (endpoints, reports, entries,
persistent-map nodes, imported services), and one full pass over them took 0.4-1.5 s on our
benchmark machines: one stall of the event loop that every request in flight waits behind,
recurring whenever the objects promoted since the last pass exceed a quarter of those that
survived it.  The gateway freezes its start-up heap, but the catalog arrives *after* start-up
(Consul answers, a peer's snapshot), and churn renews it.

Policy (:class:`HeapKeeper`): watch the full passes (``gc.callbacks``).  When one took longer
than ``pass_budget_s``, freeze the heap at the end of that very pass -- the moment when
everything left is alive, so nothing garbage is frozen -- and, as soon as the event loop
gets to it (:meth:`tend`, handed to the loop with ``run_sync_soon``), run one full collection
over what is still unfrozen (little: what was allocated since).  That
last step matters: CPython schedules the next full pass after a quarter of the *last* pass's
survivors have been promoted again, so without it the next pass would come only after hundreds
of thousands of new objects and be as long as the first.  After it, passes come early and stay
short; whenever one grows past the budget again, what survived it is frozen too.

One threshold is tuned as well: CPython considers a full pass only after every
``threshold2 + 1`` young (generation 1) passes, each promoting up to ~7 000 objects, so with
the default (10) a pass right after a reset could still find ~80 000 new objects -- 20-40 ms.
The keeper sets it to :data:`FULL_PASS_EVERY` (2) for its lifetime: passes come three times
as often and stay under ~10 ms; with the heap frozen, each is cheap.

Measured with ``scripts/bench_stall.py`` (README, "Benchmarks"), same machine, keeper off / on:
the longest GC pass during a 100k-endpoint Consul resync 555 / 36 ms, during a 100k-endpoint
peer snapshot 1 319 / 39 ms, under 1 % churn per second 7 858 / 153 ms.

Trade-off: frozen objects are still freed by reference counting (the catalog is acyclic:
frozen dataclasses, tuples, persistent maps), but an object that was alive when frozen and
later becomes part of a garbage *cycle* is never collected.  Freezes happen only when a pass was
slow, i.e. after the heap grew a lot, so the exposure is bounded by the cyclic structures alive
at those moments.  ``pass_budget_s = inf`` disables the policy.
"""

from __future__ import annotations

import contextlib
import gc
import math
import time
from collections.abc import Callable
from typing import Any

import trio

FULL_PASS_EVERY = 2
"""``threshold2`` while the keeper is installed (CPython's default is 10)."""

PASS_BUDGET_S = 0.005
"""A full GC pass longer than this freezes the heap (a pass over the objects of ~10k endpoints
takes about that long on a slow core)."""


class HeapKeeper:
    """Freezes the heap after a slow full GC pass; :meth:`tend` resets CPython's schedule.

    Used as a context manager: it installs the ``gc`` callback and, entered inside a trio run,
    hands each :meth:`tend` to that run's loop.  Not a trio instrument: an ``after_task_step``
    hook costs every task step of the data path ~0.3 us to check a flag that only a slow full
    pass sets (measured: 200k trio checkpoints took 2.9 us each without, 3.2 with it).
    """

    def __init__(
        self,
        pass_budget_s: float = PASS_BUDGET_S,
        *,
        clock: Callable[[], float] = time.perf_counter,
        freeze: Callable[[], None] = gc.freeze,
        collect: Callable[[], object] = gc.collect,
    ) -> None:
        if not pass_budget_s >= 0:
            raise ValueError("pass_budget_s must be >= 0")
        self.pass_budget_s = pass_budget_s
        self.freezes = 0
        self._clock = clock
        self._freeze = freeze
        self._collect = collect
        self._started = 0.0
        self._reset_due = False
        self._thresholds: tuple[int, int, int] | None = None
        self._loop: trio.lowlevel.TrioToken | None = None

    def __enter__(self) -> HeapKeeper:
        if not math.isinf(self.pass_budget_s):
            try:
                self._loop = trio.lowlevel.current_trio_token()
            except RuntimeError:  # outside a trio run: the owner calls tend() itself
                self._loop = None
            gc.callbacks.append(self.on_gc)
            self._thresholds = gc.get_threshold()
            gen0, gen1, _ = self._thresholds
            gc.set_threshold(gen0, gen1, FULL_PASS_EVERY)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.on_gc in gc.callbacks:
            gc.callbacks.remove(self.on_gc)
        if self._thresholds is not None:
            gc.set_threshold(*self._thresholds)
            self._thresholds = None

    def on_gc(self, phase: str, info: dict[str, Any]) -> None:
        """The ``gc.callbacks`` hook: time full passes, freeze after a slow one."""
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._started = self._clock()
        elif self._clock() - self._started >= self.pass_budget_s:
            self._freeze()  # the pass just ended: what is tracked now is alive
            self.freezes += 1
            # Due before the loop is asked: a pass may run in a thread (the Consul decode
            # offload), and the loop may run tend() before this thread gets the GIL back.
            already_due, self._reset_due = self._reset_due, True
            if not already_due and self._loop is not None:
                with contextlib.suppress(trio.RunFinishedError):
                    self._loop.run_sync_soon(self.tend)

    def tend(self) -> bool:
        """After a freeze, one full collection of the (small) unfrozen rest; True if it ran.

        Not done inside the callback: CPython runs no collection while one is in progress.
        Runs in the trio thread (``run_sync_soon``), between task steps.
        """
        if not self._reset_due:
            return False
        self._reset_due = False
        self._collect()
        return True
