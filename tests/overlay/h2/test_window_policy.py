"""The receive-window policy and the gateway-wide budget, pure: no connection, no clock.

A tiny model of one HTTP/2 stream drives the policy: a sender that sends whatever window it
has (in frames), our side that receives and lets its consumer take the bytes (at once, or
after a delay), and the credit going back.  Time is a number passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from overlay.h2.buffer_budget import BufferBudget
from overlay.h2.receive_window import FixedWindow, ReceiveWindow, receive_window
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

KIB = 1024
MIB = 1024 * KIB
SETTINGS = WindowSettings(initial=64 * KIB, maximum=1 * MIB, drain_interval=0.1, idle_after=1.0)
FRAME = 16 * KIB


@dataclass
class Model:
    """One stream: the policy's state, the sender's remaining window, the budget."""

    budget: BufferBudget
    settings: WindowSettings = SETTINGS
    state: WindowState | None = None
    peer_window: int = 0
    delivered: int = 0
    credited: int = 0
    history: list[int] | None = None

    def __post_init__(self) -> None:
        self.state = start(self.settings, 0.0)
        self.budget.take(self.settings.initial)
        self.peer_window = self.settings.initial
        self.history = [self.settings.initial]

    @property
    def s(self) -> WindowState:
        assert self.state is not None
        return self.state

    def apply(self, step: Step) -> None:
        assert step.credit >= 0 and step.take >= 0 and step.give_back >= 0
        self.state = step.state
        self.budget.take(step.take)
        self.budget.give_back(step.give_back)
        if step.refused:
            self.budget.note_refused()
        self.peer_window += step.credit
        self.credited += step.credit
        assert self.history is not None
        self.history.append(self.s.window)

    def send(self, nbytes: int, now: float) -> int:
        """The peer sends up to ``nbytes`` (what its window allows), frame by frame."""
        sent = 0
        while sent < nbytes and self.peer_window > 0:
            n = min(FRAME, nbytes - sent, self.peer_window)
            self.peer_window -= n
            self.state = on_receive(self.s, self.settings, n, now)
            sent += n
        return sent

    def consume(self, nbytes: int, now: float) -> None:
        n = min(nbytes, self.s.buffered)
        self.apply(on_consume(self.s, self.settings, n, now, self.budget.available()))
        self.delivered += n


def transfer(
    m: Model, total: int, now: float, *, read_delay: float = 0.0, chunk: int = 1 << 40
) -> float:
    """Move ``m.delivered`` up to ``total``; each round the sender sends what it may (at most
    ``chunk``), the consumer reads everything after ``read_delay``.  Returns the time then."""
    sent = m.delivered
    for _ in range(10_000):
        if m.delivered >= total:
            return now
        sent += m.send(min(chunk, total - sent), now)
        now += read_delay
        m.consume(m.s.buffered, now)
        now += 0.001  # one round trip
    raise AssertionError(f"transfer stuck at {m.delivered} of {total}")


def test_window_doubles_while_the_consumer_keeps_up_then_stops_at_the_maximum() -> None:
    m = Model(BufferBudget(256 * MIB))
    transfer(m, 8 * MIB, 0.0)
    seen = m.history
    assert seen is not None and seen[0] == 64 * KIB and seen[-1] == 1 * MIB
    assert sorted(set(seen)) == [64 * KIB << k for k in range(5)]  # doubling steps only
    assert seen == sorted(seen)  # never smaller while it keeps up
    assert m.budget.reserved == m.s.window == 1 * MIB


def test_a_consumer_slower_than_the_drain_interval_never_grows_its_window() -> None:
    m = Model(BufferBudget(256 * MIB))
    transfer(m, 4 * MIB, 0.0, read_delay=0.2)
    assert m.s.window == m.s.target == 64 * KIB


def test_an_idle_stream_falls_back_and_shrinks_by_crediting_less() -> None:
    m = Model(BufferBudget(256 * MIB))
    now = transfer(m, 4 * MIB, 0.0)
    assert m.s.window == 1 * MIB
    now += 1.5  # idle
    credited = m.credited
    # The peer still holds its credit (it cannot be revoked); as it is used, less comes back
    # (an interactive trickle: 16 KiB every 50 ms, a window per 200 ms: no reason to grow).
    transfer(m, m.delivered + 1 * MIB - 64 * KIB, now, chunk=16 * KIB, read_delay=0.05)
    assert m.s.target == 64 * KIB and m.s.window == 64 * KIB
    # 960 KiB consumed, at most one initial window's worth credited back: the rest withheld.
    assert m.credited - credited <= 64 * KIB
    assert m.budget.reserved == 64 * KIB


def test_with_the_budget_spent_windows_stay_initial_and_transfers_complete() -> None:
    budget = BufferBudget(0)
    m = Model(budget)
    transfer(m, 8 * MIB, 0.0)
    assert m.delivered == 8 * MIB
    assert m.s.window == 64 * KIB and budget.growth_refused > 0
    assert budget.reserved == 64 * KIB


def test_growth_takes_only_what_the_budget_has_left() -> None:
    budget = BufferBudget(64 * KIB + 192 * KIB)  # one initial window plus 192 KiB of growth
    m = Model(budget)
    transfer(m, 8 * MIB, 0.0)
    assert m.s.window == 256 * KIB  # 64 -> 128 -> 256; 512 would not fit
    assert budget.reserved == budget.limit


def test_end_and_close_give_everything_back() -> None:
    m = Model(BufferBudget(256 * MIB))
    transfer(m, 4 * MIB, 0.0)
    m.send(100 * KIB, 1.0)
    m.apply(on_end(m.s))
    assert m.budget.reserved == m.s.window == 100 * KIB
    m.consume(40 * KIB, 1.0)
    assert m.budget.reserved == 60 * KIB and m.credited > 0
    m.apply(on_close(m.s))
    assert m.budget.reserved == 0


def test_a_blocked_sender_always_gets_credit_back() -> None:
    """Whatever the window's history, once the consumer took everything the sender may send
    again: the policy cannot deadlock a stream."""
    m = Model(BufferBudget(256 * MIB))
    now = transfer(m, 3 * MIB, 0.0)
    for idle in (0.0, 2.0, 0.0, 5.0):
        now += idle
        sent = m.send(1 << 40, now)  # everything the window allows
        assert m.peer_window == 0 and sent > 0
        m.consume(m.s.buffered, now)
        assert m.peer_window > 0


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError):
        WindowSettings(initial=2 * MIB, maximum=1 * MIB)
    with pytest.raises(ValueError):
        WindowSettings(initial=64 * KIB, maximum=2**31)
    with pytest.raises(ValueError):
        BufferBudget(64).give_back(1)


# Events: (stream index, kind, amount, time step).  Kinds: send, consume, end, close.  Events
# go to the first eight streams; the others (up to 64) hold their initial windows meanwhile.
EVENTS = st.lists(
    st.tuples(
        st.integers(0, 7),
        st.sampled_from(["send", "send", "consume", "consume", "end", "close"]),
        st.integers(1, 2 * MIB),
        st.sampled_from([0.0, 0.0, 0.001, 0.05, 0.3, 2.0]),
    ),
    max_size=400,
)


@settings(max_examples=150, deadline=None)
@given(
    streams=st.integers(1, 64),
    limit=st.integers(0, 1 * MIB),
    events=EVENTS,
)
def test_growth_never_exceeds_the_budget_whatever_the_stream_count(
    streams: int, limit: int, events: list[tuple[int, str, int, float]]
) -> None:
    budget = BufferBudget(limit)
    models = [Model(budget) for _ in range(streams)]
    live = set(range(streams))
    now = 0.0
    for index, kind, amount, dt in events:
        now += dt
        i = index % streams
        if i not in live:
            continue
        m = models[i]
        if kind == "send" and not m.s.ended:
            m.send(amount, now)
        elif kind == "consume":
            m.consume(amount, now)
        elif kind == "end":
            m.apply(on_end(m.s))
        elif kind == "close":
            m.apply(on_close(m.s))
            live.discard(i)
        windows = [models[j].s.window for j in live]
        # The budget's count is exactly what the windows promise ...
        assert budget.reserved == sum(windows)
        # ... growth above the initial windows never takes more than the budget ...
        assert sum(max(0, w - SETTINGS.initial) for w in windows) <= limit
        for j in live:
            s = models[j].s
            # ... no window passes the maximum, and the peer never holds more than it.
            assert s.window <= SETTINGS.maximum
            assert 0 <= s.buffered <= s.window or s.ended
            assert s.ended or models[j].peer_window <= s.open
    for j in list(live):
        models[j].apply(on_close(models[j].s))
    assert budget.reserved == 0


async def test_the_fixed_window_fast_path_credits_what_the_policy_would() -> None:
    """Callers' connections (fixed windows, no budget) skip the policy's state per read; the
    credit they give back must be the policy's to the byte."""
    fixed_settings = WindowSettings(initial=64 * KIB, maximum=64 * KIB)
    fast = receive_window(fixed_settings, None)
    slow = ReceiveWindow(fixed_settings, None)
    assert isinstance(fast, FixedWindow) and not isinstance(slow, FixedWindow)
    sizes = [1, 100, 16 * KIB, 7, 32 * KIB, 32 * KIB - 1, 2, 64 * KIB, 5 * KIB, 30 * KIB] * 20
    for n in sizes:
        for w in (fast, slow):
            w.received(n)
        assert fast.consumed(n) == slow.consumed(n)
    fast.ended()
    slow.ended()
    assert fast.consumed(10) == slow.consumed(10) == 0
