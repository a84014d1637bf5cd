"""The supervisor's side of a scrape: ask every worker for its counters, wait a bounded time.

Why a round with a deadline: ``/metrics`` must answer even when a worker is stuck, dead or
restarting.  One round sends a stats request on every worker's channel at once and waits at
most ``timeout_s`` for the answers; a worker that did not answer is shown with its last
counts (:class:`~gateway.workers.stats.StatsBook`), so a slow worker never makes the site's
counters dip, but without its gauges and links (a dead worker holds no link), and its late
answer is still recorded when it comes.  Rounds are serialized
(two scrapes at once share nothing but wait in turn), so request ids tell this round's
answers from an older one's.

The channel's receive loop (the lead's code: one per worker) calls :meth:`StatsPoll.answer`
with each stats reply; this module knows no message type: ``request`` builds the request
message from its id (``StatsRequest``).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import replace

import trio

from foundation.errors import IsthmusError
from gateway.workers.stats import StatsBook, WorkerStats

__all__ = ["Send", "StatsPoll"]

log = logging.getLogger("isthmus.workers")

#: Sends one message on a worker's channel.
Send = Callable[[object], Awaitable[None]]


class StatsPoll:
    """Rounds of stats requests to the workers, their answers kept in ``book``."""

    def __init__(
        self,
        book: StatsBook,
        request: Callable[[int], object],
        *,
        timeout_s: float = 2.0,
    ) -> None:
        self.book = book
        self.request = request
        self.timeout_s = timeout_s
        self._round = 0
        self._waiting: set[int] = set()
        self._answered = trio.Event()
        self._lock = trio.Lock()

    async def poll(
        self, channels: Mapping[int, Send], request: Callable[[int], object] | None = None
    ) -> list[WorkerStats]:
        """One round: ask each worker in ``channels`` (index -> its send), wait until all
        answered or ``timeout_s`` passed; the last answer of every worker, by index.
        ``request``: this round's message builder, instead of the poll's own."""
        build = self.request if request is None else request
        async with self._lock:
            self._round += 1
            rid = self._round
            self._waiting = set(channels)
            self._answered = trio.Event()
            with trio.move_on_after(self.timeout_s):
                async with trio.open_nursery() as nursery:
                    for index, send in channels.items():
                        nursery.start_soon(self._ask, index, send, rid, build(rid))
                if self._waiting:
                    await self._answered.wait()
            if self._waiting:
                log.debug("stats round %d: no answer from workers %s", rid, sorted(self._waiting))
                self.book.silent(self._waiting)
            self._waiting = set()
            return self.book.current()

    async def _ask(self, index: int, send: Send, rid: int, message: object) -> None:
        try:
            await send(message)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError, IsthmusError) as exc:
            # A dead worker's channel: the pool restarts it; the round does not wait for it.
            log.debug("stats request to worker %d failed: %s", index, type(exc).__name__)
            self.book.silent([index])
            self._settle(index, rid)

    def answer(self, index: int, request_id: int, stats: object) -> None:
        """A stats reply from worker ``index`` (any round's: a late one is still the newest
        figures); anything but a :class:`WorkerStats` is ignored."""
        if not isinstance(stats, WorkerStats):
            log.warning("worker %d answered stats with %s", index, type(stats).__name__)
            return
        if stats.index != index:  # the channel says who it is, not the message
            stats = replace(stats, index=index)
        self.book.record(stats)
        self._settle(index, request_id)

    def _settle(self, index: int, rid: int) -> None:
        if rid != self._round or index not in self._waiting:
            return
        self._waiting.discard(index)
        if not self._waiting:
            self._answered.set()
