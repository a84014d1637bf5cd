"""The gateway-wide budget for receive windows: an accountant of bytes promised to peers.

Why: every stream's receive window is memory a peer may fill at any moment (HTTP/2 credit
cannot be taken back).  Windows that grow to keep bulk tunnels fast (``window_policy.py``)
must not add up to more memory than the gateway is meant to hold, however many tunnels are
open.  One counter for the whole gateway -- shared by every link's streams -- answers "may
this window grow?"; past the budget windows stay at their initial size and nothing fails.

Theory of operation
-------------------
``reserved`` is the sum of the windows of every stream that uses the budget: each stream's
initial window is *taken* when it opens, whatever the balance (a new stream is never refused
here: its count is bounded by the stream limits, and a peer assumes the initial window from
SETTINGS anyway), and growth is taken only while ``reserved + growth <= limit`` (the window
policy asks :meth:`available` first).  So the bytes windows grew by never exceed the budget,
and once the initial windows alone fill it, no window grows.  Bytes come back when a window
shrinks (credit withheld as data is consumed) or its stream ends.

Single-threaded (one trio run), so no locking; not sans-IO-pure, but free of I/O and time.
"""

from __future__ import annotations


class BufferBudget:
    """Bytes reserved for receive windows across the gateway, against ``limit``."""

    __slots__ = ("_growth_refused", "_limit", "_peak", "_reserved")

    def __init__(self, limit: int) -> None:
        if limit < 0:
            raise ValueError("buffer budget must be >= 0")
        self._limit = limit
        self._reserved = 0
        self._peak = 0
        self._growth_refused = 0

    @property
    def limit(self) -> int:
        return self._limit

    @property
    def reserved(self) -> int:
        return self._reserved

    @property
    def peak(self) -> int:
        """The most ever reserved at once (for statistics)."""
        return self._peak

    @property
    def growth_refused(self) -> int:
        """How many times a window stayed small because the budget was spent."""
        return self._growth_refused

    def available(self) -> int:
        """What growth may still take (negative once initial windows alone overran it)."""
        return self._limit - self._reserved

    def take(self, nbytes: int) -> None:
        """Count ``nbytes`` more: an initial window (always) or growth the policy checked
        against :meth:`available`."""
        if nbytes < 0:
            raise ValueError("take a non-negative number of bytes")
        self._reserved += nbytes
        self._peak = max(self._peak, self._reserved)

    def give_back(self, nbytes: int) -> None:
        """``nbytes`` of window are no longer promised (shrunk, or the stream ended)."""
        if not 0 <= nbytes <= self._reserved:
            raise ValueError(f"giving back {nbytes} of {self._reserved} reserved bytes")
        self._reserved -= nbytes

    def note_refused(self) -> None:
        self._growth_refused += 1
