"""One stream's receive window: the window policy's state, the clock and the budget together.

Why apart from ``H2Stream``: the stream only says what happened to its bytes (arrived,
consumed, ended, gone) and sends the credit it is told to; the decisions are
``window_policy.py``'s (pure) and the accounting the budget's.  Nothing here knows which
HTTP/2 engine is underneath: whatever delivers DATA and sends WINDOW_UPDATE can use it.
"""

from __future__ import annotations

import trio

from overlay.h2.buffer_budget import BufferBudget
from overlay.h2.window_policy import (
    Step,
    WindowSettings,
    WindowState,
    on_close,
    on_consume,
    on_end,
    on_receive,
    start,
)

#: Growth is never limited without a budget.
UNLIMITED = 1 << 62


def receive_window(settings: WindowSettings, budget: BufferBudget | None) -> ReceiveWindow:
    """The window of a new stream: adaptive (or counted against a budget) through the policy;
    a fixed one without a budget (callers' connections) by :class:`FixedWindow`, which gives
    the same credit at a fraction of the cost per read."""
    if settings.adaptive or budget is not None:
        return ReceiveWindow(settings, budget)
    return FixedWindow(settings, budget)


class ReceiveWindow:
    """Arrivals are only added up here (this runs for every DATA frame) and handed to the
    policy, as one receipt at the time of the first, before the next read, end or close:
    nothing looks at the policy's state in between."""

    __slots__ = ("_arrived", "_budget", "_first_arrival", "_settings", "_state")

    def __init__(self, settings: WindowSettings, budget: BufferBudget | None) -> None:
        self._settings = settings
        self._budget = budget
        self._state = start(settings, trio.current_time())
        self._arrived = 0
        self._first_arrival = 0.0
        if budget is not None:
            budget.take(settings.initial)

    @property
    def state(self) -> WindowState:
        self._settle()
        return self._state

    def received(self, nbytes: int) -> None:
        if not self._arrived:
            self._first_arrival = trio.current_time()
        self._arrived += nbytes

    def consumed(self, nbytes: int) -> int:
        """The consumer took ``nbytes``: the credit to send the peer now (0: none)."""
        self._settle()
        budget = self._budget
        available = UNLIMITED if budget is None else budget.available()
        step = on_consume(self._state, self._settings, nbytes, trio.current_time(), available)
        self._apply(step)
        return step.credit

    def ended(self) -> None:
        self._settle()
        self._apply(on_end(self._state))

    def closed(self) -> None:
        self._settle()
        self._apply(on_close(self._state))

    def _settle(self) -> None:
        if self._arrived:
            arrived, self._arrived = self._arrived, 0
            self._state = on_receive(self._state, self._settings, arrived, self._first_arrival)

    def _apply(self, step: Step) -> None:
        self._state = step.state
        budget = self._budget
        if budget is not None:
            if step.take:
                budget.take(step.take)
            if step.give_back:
                budget.give_back(step.give_back)
            if step.refused:
                budget.note_refused()


class FixedWindow(ReceiveWindow):
    """A window that never grows and counts against no budget: consumed bytes go back once
    they reach half the window (what the policy decides for such a window, without building
    its state per read)."""

    __slots__ = ("_ended", "_owed", "_size")

    def __init__(self, settings: WindowSettings, budget: BufferBudget | None) -> None:
        super().__init__(settings, None)
        self._size = settings.initial
        self._owed = 0
        self._ended = False

    def received(self, nbytes: int) -> None:
        pass

    def consumed(self, nbytes: int) -> int:
        if self._ended:
            return 0
        owed = self._owed + nbytes
        if owed >= self._size // 2:
            self._owed = 0
            return owed
        self._owed = owed
        return 0

    def ended(self) -> None:
        self._ended = True

    def closed(self) -> None:
        self._ended = True

    @property
    def state(self) -> WindowState:
        return self._state._replace(owed=self._owed, ended=self._ended)
