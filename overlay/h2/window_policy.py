"""How large one stream's receive window is, and how much credit to give back: sans-IO.

Why: a fixed window is a bad bargain either way.  Small (64 KiB), a bulk tunnel is stop-and-wait
on every window and crawls; large (1 MiB) for every stream, a thousand quiet tunnels promise a
gigabyte to their peers.  So a window starts small and grows only for a stream that uses it,
within one gateway-wide budget (``buffer_budget.py``), and falls back when the stream goes idle.

Theory of operation
-------------------
State per stream (:class:`WindowState`): ``window`` is what this stream has promised its peer
and not yet got back -- credit still open (bytes the peer may send or has in flight),
``buffered`` (arrived, not consumed) and ``owed`` (consumed, not yet credited back).  So
``open = window - buffered - owed``.  ``target`` is what ``window`` should be.

* Receipt (:func:`on_receive`): the bytes move from ``open`` to ``buffered``.
* Consumption (:func:`on_consume`): the bytes move from ``buffered`` to ``owed``.  Growth is
  BDP-style, in epochs that start when bytes arrive: when the consumer has taken a whole
  window's worth within ``drain_interval`` (a generous round trip) of the epoch's first
  arrival and is keeping up (at most a quarter of the window left in its buffer), the stream
  moves a window per round trip -- it keeps its window full and drains it -- so ``target``
  doubles, up to ``maximum``, if the budget has room for the growth; else it stays
  (``refused``) and nothing fails.  The next arrival starts a new epoch, as it does after an
  epoch that ran out.  So a window settles near rate times ``drain_interval``; a consumer
  that falls behind (data piles up in its buffer, or sits there past the interval) or a
  stream that moves less than a window per interval never grows: a bigger window would only
  buffer more.
* Idle: a stream with no byte received or consumed for ``idle_after`` falls back to the
  initial target (checked lazily at its next event; HTTP/2 credit given cannot be revoked).
* Credit: a window below target is raised at once (a WINDOW_UPDATE of ``owed`` plus the
  growth); above target, consumed bytes are withheld until it is back down (shrinking by
  crediting less, never by revoking); otherwise ``owed`` goes back once it reaches half the
  window (as h2's own window manager batches, so a trickle does not cost a frame per read).
  A blocked sender always gets credit once its bytes are consumed: then ``owed`` is the whole
  window.
* End: once the peer ended its direction, no credit is due; the window shrinks to what is
  buffered, and to zero as that is consumed; closing gives everything back.

Budget bookkeeping: each :class:`Step` says what to take from or give back to the budget, so
the budget's ``reserved`` is always the sum of the windows of its streams.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

#: Keeping up: at most ``window // KEEPING_UP_FRACTION`` left buffered after a read.
KEEPING_UP_FRACTION = 4


@dataclass(frozen=True, slots=True)
class WindowSettings:
    """``initial``: every stream's window at first (SETTINGS_INITIAL_WINDOW_SIZE);
    ``maximum``: growth stops here (equal to ``initial``: fixed windows)."""

    initial: int
    maximum: int
    drain_interval: float = 0.1
    idle_after: float = 1.0

    def __post_init__(self) -> None:
        if not 1 <= self.initial <= self.maximum < 2**31:
            raise ValueError("windows need 1 <= initial <= maximum < 2**31")
        if self.drain_interval < 0 or self.idle_after <= 0:
            raise ValueError("drain_interval must be >= 0 and idle_after > 0")

    @property
    def adaptive(self) -> bool:
        return self.maximum > self.initial


class WindowState(NamedTuple):
    """Immutable like the house's frozen dataclasses, but a NamedTuple: one is built per read
    of every tunnel's bulk data, and a NamedTuple is built about three times faster."""

    target: int
    window: int
    buffered: int = 0
    owed: int = 0
    epoch_start: float | None = None
    epoch_bytes: int = 0
    last_active: float = 0.0
    ended: bool = False

    @property
    def open(self) -> int:
        """Credit the peer still holds plus bytes in flight (as far as we know)."""
        return self.window - self.buffered - self.owed


class Step(NamedTuple):
    """The new state; ``credit`` to send the peer now (0: no WINDOW_UPDATE); bytes to
    ``take`` from and ``give_back`` to the budget; whether growth was ``refused``.  (A
    NamedTuple for the same reason as :class:`WindowState`.)"""

    state: WindowState
    credit: int = 0
    take: int = 0
    give_back: int = 0
    refused: bool = False


def start(settings: WindowSettings, now: float) -> WindowState:
    """A new stream: the initial window (the caller takes it from the budget)."""
    initial = settings.initial
    return WindowState(target=initial, window=initial, last_active=now)


def _after_idle(s: WindowState, settings: WindowSettings, now: float) -> WindowState:
    if s.target > settings.initial and now - s.last_active >= settings.idle_after:
        return s._replace(target=settings.initial, epoch_start=None, epoch_bytes=0)
    return s


def on_receive(s: WindowState, settings: WindowSettings, nbytes: int, now: float) -> WindowState:
    """``nbytes`` of DATA arrived into the stream's buffer (the first of them at ``now``: an
    adapter may add up the arrivals between two reads and apply them at once)."""
    s = _after_idle(s, settings, now)
    start = now if s.epoch_start is None else s.epoch_start
    # Built directly, not with ``dataclasses.replace``: this runs for every DATA frame.
    return WindowState(
        s.target, s.window, s.buffered + nbytes, s.owed, start, s.epoch_bytes, now, s.ended
    )


def on_consume(
    s: WindowState, settings: WindowSettings, nbytes: int, now: float, available: int
) -> Step:
    """The consumer took ``nbytes``; ``available`` is what the budget has left for growth."""
    s = _after_idle(s, settings, now)
    buffered = s.buffered - nbytes
    if s.ended:  # no more credit: the window is what is still buffered
        give_back = min(nbytes, s.window)
        state = WindowState(s.target, s.window - give_back, buffered, s.owed, None, 0, now, s.ended)
        return Step(state, give_back=give_back)
    owed = s.owed + nbytes
    target, refused = s.target, False
    epoch_start, epoch_bytes = s.epoch_start, s.epoch_bytes + nbytes
    if epoch_start is None or now - epoch_start > settings.drain_interval:
        epoch_start, epoch_bytes = None, 0  # too slow: the next arrival starts a new epoch
    elif epoch_bytes >= s.window:
        if buffered <= s.window // KEEPING_UP_FRACTION and target < settings.maximum:
            grown = min(settings.maximum, 2 * target)
            if grown - s.window <= available:
                target = grown
            else:
                refused = True
        epoch_start, epoch_bytes = None, 0
    window, credit, take, give_back = s.window, 0, 0, 0
    if window < target:
        take = target - window
        credit, owed, window = owed + take, 0, target
    elif window > target:
        give_back = min(owed, window - target)
        window -= give_back
        owed -= give_back
    if owed and owed >= window // 2:
        credit, owed = credit + owed, 0
    state = WindowState(target, window, buffered, owed, epoch_start, epoch_bytes, now, False)
    return Step(state, credit=credit, take=take, give_back=give_back, refused=refused)


def on_end(s: WindowState) -> Step:
    """The peer ended its direction: only what is buffered stays promised."""
    if s.ended:
        return Step(s)
    window = min(s.window, s.buffered)
    state = s._replace(window=window, owed=0, ended=True)
    return Step(state, give_back=s.window - window)


def on_close(s: WindowState) -> Step:
    """The stream is gone (closed, reset, connection lost): nothing stays promised."""
    return Step(s._replace(window=0, buffered=0, owed=0, ended=True), give_back=s.window)
