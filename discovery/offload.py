"""Run a pure decode in a worker thread, one at a time, then rest: the loop keeps serving.

Why: a Consul answer for a service of a few hundred instances is hundreds of kilobytes of
JSON, and a rollout or a 1 % churn over a 100k-endpoint catalog makes hundreds of such
answers arrive within a second.  ``json.loads`` and the parse into endpoints are one call
each: on the event loop, every request in flight waits until the whole answer is decoded.  In
a worker thread the loop keeps running; it only waits for the GIL, which the worker hands over
at least every switch interval (5 ms) while it runs Python code, and after each C call.

Rules that keep it bounded and safe:

* the function is pure and its inputs are not touched by anyone while it runs (the raw answer
  belongs to the request that received it; the ``known`` fingerprints of the previous answer
  are never mutated); what comes back is a new value that only the caller holds, and the
  worker keeps no reference to it;
* one decode at a time per :class:`Offload` (a lock), so a burst of answers queues instead of
  taking every thread and every core;
* after each decode the caller rests in proportion to the CPU time it took (the duty cycle of
  :mod:`discovery.pacing`), holding the lock: a burst uses at most ``DUTY`` of the time, the
  data path has the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import trio

from discovery.pacing import DUTY, MAX_REST_S

R = TypeVar("R")


class Offload:
    """One decoder lane: :meth:`run` takes turns; ``runs`` counts the decodes done off the loop."""

    def __init__(self, *, duty: float = DUTY) -> None:
        if not 0 < duty <= 1:
            raise ValueError("duty must be in (0, 1]")
        self._lock = trio.Lock()
        self._factor = (1 - duty) / duty
        self.runs = 0

    async def run(self, fn: Callable[[], R]) -> R:
        """``fn()`` in a worker thread (after the previous one finished), then a rest.

        Cancellation while the worker runs waits for it to finish (a decode is bounded by the
        body size limit): no thread is ever left running behind the lock's back.
        """

        def timed() -> tuple[R, float]:
            began = time.thread_time()
            result = fn()
            return result, time.thread_time() - began

        async with self._lock:
            result, took = await trio.to_thread.run_sync(timed)
            self.runs += 1
            rest = min(took * self._factor, MAX_REST_S)
            if rest > 0:
                await trio.sleep(rest)
        return result
