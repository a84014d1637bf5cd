"""``HandshakeGate``: at most so many TLS handshakes at once per gateway, the rest wait in order.

Why: a gateway with fifty peers that starts (or whose peers all restart) begins fifty
handshakes -- its dials and its peers' dials to it -- at the same moment.  On a small machine
each then gets a fiftieth of the CPU, every one of them runs past its timeout, and all are
lost and redialed together: the mesh never converges.  A few handshakes at a time finish
quickly; the others wait their turn in arrival order.

Theory of operation
-------------------
A FIFO semaphore of ``limit`` slots (trio's ``Semaphore`` hands a released slot to the
longest waiter, so a newcomer never overtakes).  The queue is bounded too: when ``limit``
handshakes run and ``max_waiting`` wait, a new one is refused at once with
:class:`HandshakeBusy` (a ``LinkError``: a dialer backs off and redials, an acceptor closes
the connection and logs it, rate-limited) -- never queued without bound.  Waiting is bounded by
the caller's own deadline: the acceptor waits inside its ``tls_handshake_timeout_s`` (the
dialer's clock runs anyway), a dialer waits at most its ``connect_timeout_s`` *before* it
connects (so no peer's handshake timer runs while it waits) and then has its full budget.
One gate serves both directions of a gateway (peering creates it; ``[limits]
max_concurrent_handshakes``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio

from overlay.link.link import LinkError

__all__ = ["WAITING_PER_SLOT", "HandshakeBusy", "HandshakeGate"]

#: Handshakes that may wait per slot before new ones are refused (queue = limit * this).
WAITING_PER_SLOT = 8


class HandshakeBusy(LinkError):
    """Too many TLS handshakes are running and waiting already: this one is refused."""


class HandshakeGate:
    """See the module docstring."""

    def __init__(self, limit: int, *, max_waiting: int | None = None) -> None:
        if limit < 1:
            raise ValueError("limit must be at least 1")
        self.limit = limit
        self.max_waiting = limit * WAITING_PER_SLOT if max_waiting is None else max_waiting
        self._slots = trio.Semaphore(limit)
        self.waiting = 0
        #: Handshakes refused because the queue was full (for /links and tests).
        self.refused = 0

    @property
    def running(self) -> int:
        """Handshakes holding a slot now."""
        return self.limit - self._slots.value

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one handshake slot for the ``async with`` body (see :meth:`acquire`)."""
        await self.acquire()
        try:
            yield
        finally:
            self.release()

    async def acquire(self) -> None:
        """Take one handshake slot: wait for one in order (the caller bounds the wait; a
        cancelled wait takes none), or raise :class:`HandshakeBusy` when the queue is full.
        Every successful ``acquire`` needs one :meth:`release`."""
        if self._slots.value == 0 and self.waiting >= self.max_waiting:
            self.refused += 1
            raise HandshakeBusy(
                f"{self.running} TLS handshakes running and {self.waiting} waiting"
                f" (limit {self.limit}): refused"
            )
        self.waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self.waiting -= 1

    def release(self) -> None:
        self._slots.release()
