"""Latest-value broadcast: publishers set the newest snapshot, subscribers see the newest one.

Why not a channel per subscriber: a channel queues every version, so a slow subscriber either
blocks the publisher (a stuck router would freeze discovery) or grows a backlog without bound.
Snapshots are complete values, so intermediate versions are worthless once a newer one exists:
a subscriber only needs *the latest*, and the number of versions it skipped.

Theory of operation
-------------------
The watch holds one value, a publish counter and one ``trio.Event`` for "something newer than
now".  ``publish`` swaps the value, bumps the counter, sets the event and replaces it with a
fresh one.  A subscriber remembers the counter it last saw; when it asks for the next value it
either gets the current one at once (counter moved) or waits on the event.  Memory is O(1) in
the number of publishes and O(subscribers) only for parked waiters, whatever their speed.
``close`` ends every subscription (after it has seen the final value).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Generic, TypeVar

import trio

T = TypeVar("T")


class WatchClosed(Exception):
    """The watch was closed and the caller has already seen its final value."""


class Watch(Generic[T]):
    """Holds the latest value of type ``T`` and wakes whoever waits for a newer one."""

    def __init__(self, initial: T) -> None:
        self._value = initial
        self._count = 0
        self._changed = trio.Event()
        self._closed = False

    @property
    def latest(self) -> T:
        return self._value

    @property
    def count(self) -> int:
        """How many values have been published (0 = only the initial value)."""
        return self._count

    @property
    def closed(self) -> bool:
        return self._closed

    def publish(self, value: T) -> None:
        """Make ``value`` the latest and wake every waiter.  Never blocks."""
        if self._closed:
            raise trio.ClosedResourceError("publish on a closed Watch")
        self._value = value
        self._count += 1
        changed, self._changed = self._changed, trio.Event()
        changed.set()

    def close(self) -> None:
        """No more values: subscribers finish after seeing the current one."""
        if not self._closed:
            self._closed = True
            self._changed.set()

    async def wait_newer(self, seen: int) -> tuple[int, T]:
        """Wait until a value newer than publish count ``seen`` exists; return (count, value).

        Raises :class:`WatchClosed` if the watch is closed and nothing newer will come.
        """
        while self._count <= seen:
            if self._closed:
                raise WatchClosed
            await self._changed.wait()
        return self._count, self._value

    def statistics(self) -> dict[str, int | bool]:
        return {"published": self._count, "closed": self._closed}

    async def subscribe(self, *, include_current: bool = True) -> AsyncIterator[T]:
        """Yield the current value (unless ``include_current`` is False), then every newer latest
        value; values published while the subscriber was busy are skipped, never queued."""
        seen = self._count - 1 if include_current else self._count
        while True:
            try:
                seen, value = await self.wait_newer(seen)
            except WatchClosed:
                return
            yield value
