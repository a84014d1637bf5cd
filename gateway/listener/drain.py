"""A graceful stop for callers: take no new work, let the work in flight finish, bounded.

Theory of operation
-------------------
One :class:`Drain` per process (``gw.drain``, shutdown's) and one *part* of it per caller
listener (:meth:`Drain.part`), handed to that listener (``drain=``).  Until a drain begins it
only counts the caller connections that are open (a part's count is also its whole's).
:meth:`Drain.begin` on the whole begins every part -- shutdown; on one part it begins that
listener alone -- a config reload that removes or replaces it (:mod:`gateway.reload.scoped`).
Then, for each listener begun:

* it stops accepting and closes its sockets (a new caller's connect is refused by the kernel
  -- in worker mode another worker's socket on the same port, or the restarted gateway's,
  takes it; after a reload, the listener that replaces it may bind the same address);
* an HTTP/1.1 connection answers the request it is serving with ``connection: close`` and
  closes after it; one that waits for its next request (keep-alive) closes at once, while one
  whose next request has begun to arrive is served first;
* an HTTP/2 connection refuses new streams (``REFUSED_STREAM``: the caller may retry them
  elsewhere), lets the open ones finish, then closes with GOAWAY;
* an L4 tunnel (SNI, CONNECT, TCP service port) runs on until it ends or the grace is over.

:meth:`Drain.wait_idle` returns once no caller connection is open or the grace has passed;
the owner then ends what is still open (the process, or the one listener's task).
``[limits] drain_grace_s``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import trio

log = logging.getLogger("isthmus.workers")


class Drain:
    """The drain state of a process's caller listeners, or of one listener (a part of the
    process's: :meth:`part`); see the module docstring."""

    def __init__(self, name: str = "", *, parent: Drain | None = None) -> None:
        self.name = name
        self._parent = parent
        self._parts: set[Drain] = set()
        self._begun = trio.Event()
        self._open = 0
        self._listening = 0  # listeners whose sockets are still open (serve_tcp)
        self._lot = trio.lowlevel.ParkingLot()  # woken on every count that reaches 0
        self._waiting: set[trio.CancelScope] = set()

    @property
    def draining(self) -> bool:
        """True once the drain has begun."""
        return self._begun.is_set()

    @property
    def open_connections(self) -> int:
        """Caller connections open here and in every part (a draining one's included)."""
        return self._open

    @property
    def listening(self) -> bool:
        """Whether a listener of this drain still holds its listening sockets open."""
        return self._listening > 0

    def part(self, name: str) -> Drain:
        """A drain for one listener, counted in this one and begun with it until it is
        :meth:`detach`-ed (a part made while this one drains drains from the start)."""
        child = Drain(name, parent=self)
        if self.draining:
            child.begin()
        self._parts.add(child)
        return child

    def detach(self) -> None:
        """Forget this part in its whole (idempotent): its listener has ended."""
        if self._parent is not None:
            self._parent._parts.discard(self)

    def begin(self) -> None:
        """Start draining (idempotent): listeners close, idle connections close."""
        if self._begun.is_set():
            return
        if self._parent is None:
            log.info("draining: no new caller connections; %d open", self._open)
        self._begun.set()
        for scope in self._waiting:
            scope.cancel()
        for part in tuple(self._parts):
            part.begin()

    async def wait_begun(self) -> None:
        await self._begun.wait()

    async def wait_closed(self) -> None:
        """Wait until no listener of this drain holds its sockets open (the port is free)."""
        while self._listening:
            await self._lot.park()

    async def wait_idle(self, grace_s: float) -> bool:
        """Wait until no caller connection is open (True) or ``grace_s`` passed (False)."""
        with trio.move_on_after(grace_s):
            while self._open:
                await self._lot.park()
        if self._open:
            whose = f"{self.name}: " if self.name else ""
            log.warning(
                "%sdrain grace %.1f s over: %d caller connections cut", whose, grace_s, self._open
            )
        return not self._open

    async def start_and_wait(self, grace_s: float) -> bool:
        """:meth:`begin`, then :meth:`wait_idle`."""
        self.begin()
        return await self.wait_idle(grace_s)

    # -- for the listeners ------------------------------------------------------------------

    @contextmanager
    def connection(self) -> Iterator[None]:
        """Count one caller connection for as long as the block runs."""
        self._count(1)
        try:
            yield
        finally:
            self._count(-1)

    def _count(self, delta: int) -> None:
        self._open += delta
        if not self._open:
            self._lot.unpark_all()
        if self._parent is not None:
            self._parent._count(delta)

    @contextmanager
    def accepting(self) -> Iterator[None]:
        """Held by a listener while its listening sockets are open (:meth:`wait_closed`)."""
        self._listening += 1
        try:
            yield
        finally:
            self._listening -= 1
            if not self._listening:
                self._lot.unpark_all()

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
