"""A graceful stop for callers: take no new work, let the work in flight finish, bounded.

Theory of operation
-------------------
One :class:`Drain` per process, handed to every caller listener (``drain=``).  Until
:meth:`Drain.begin` it only counts the caller connections that are open.  Then:

* every listener stops accepting and closes its sockets (a new caller's connect is refused
  by the kernel -- in worker mode another worker's socket on the same port, or the restarted
  gateway's, takes it);
* an HTTP/1.1 connection answers the request it is serving with ``connection: close`` and
  closes after it; one that waits for its next request (keep-alive) closes at once, while one
  whose next request has begun to arrive is served first;
* an HTTP/2 connection refuses new streams (``REFUSED_STREAM``: the caller may retry them
  elsewhere), lets the open ones finish, then closes with GOAWAY;
* an L4 tunnel (SNI, CONNECT, TCP service port) runs on until it ends or the grace is over.

:meth:`Drain.wait_idle` returns once no caller connection is open or the grace has passed;
the owner then ends the process (what is still open is cut).  ``[limits] drain_grace_s``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import trio

log = logging.getLogger("isthmus.workers")


class Drain:
    """The drain state of one process's caller listeners; see the module docstring."""

    def __init__(self) -> None:
        self._begun = trio.Event()
        self._open = 0
        self._idle_lot = trio.lowlevel.ParkingLot()
        self._waiting: set[trio.CancelScope] = set()

    @property
    def draining(self) -> bool:
        """True once the drain has begun."""
        return self._begun.is_set()

    @property
    def open_connections(self) -> int:
        return self._open

    def begin(self) -> None:
        """Start draining (idempotent): listeners close, idle connections close."""
        if self._begun.is_set():
            return
        log.info("draining: no new caller connections; %d open", self._open)
        self._begun.set()
        for scope in self._waiting:
            scope.cancel()

    async def wait_begun(self) -> None:
        await self._begun.wait()

    async def wait_idle(self, grace_s: float) -> bool:
        """Wait until no caller connection is open (True) or ``grace_s`` passed (False)."""
        with trio.move_on_after(grace_s):
            while self._open:
                await self._idle_lot.park()
        if self._open:
            log.warning("drain grace %.1f s over: %d caller connections cut", grace_s, self._open)
        return not self._open

    async def start_and_wait(self, grace_s: float) -> bool:
        """:meth:`begin`, then :meth:`wait_idle`."""
        self.begin()
        return await self.wait_idle(grace_s)

    # -- for the listeners ------------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[None]:
        """Count one caller connection for as long as the block runs."""
        self._open += 1
        try:
            yield
        finally:
            self._open -= 1
            if not self._open:
                self._idle_lot.unpark_all()

    @contextmanager
    def waiting(self) -> Iterator[trio.CancelScope]:
        """A cancel scope (not yet entered) for a wait for a caller's next request: it is
        cancelled when the drain begins (at once, if it has), so an idle connection closes
        instead of holding the drain for its idle timeout."""
        scope = trio.CancelScope()
        if self._begun.is_set():
            scope.cancel()
        self._waiting.add(scope)
        try:
            yield scope
        finally:
            self._waiting.discard(scope)
