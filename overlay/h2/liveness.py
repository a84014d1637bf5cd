"""When to PING a link and when to declare it down: a pure timing core.

Theory of operation
-------------------
One PING is in flight at most.  ``poll(state, now)`` answers what the driver should do now:

* no PING outstanding and ``now >= next_ping_at``: send a PING with a fresh 8-byte payload,
  whose deadline is ``now + ping_timeout``; the next PING is due ``ping_interval`` after this
  one was sent (a fixed cadence, not "interval after the ack", so a slow peer cannot stretch it);
* a PING outstanding and ``now >= deadline``: the link is down;
* otherwise: sleep until the earlier of the deadline and the next PING time.

``on_ack(state, payload, now)`` clears the outstanding PING when the payload matches; an
unknown payload (a stale or foreign ack) changes nothing.

Detection bound: if the peer stops answering at time T, every PING sent after T goes
unanswered.  The last PING sent before T was sent at some t0 <= T; if it was unanswered it
expires at t0 + timeout <= T + timeout, otherwise the next PING is sent by t0 + interval <=
T + interval and expires by T + interval + timeout.  So **a silent peer is declared down at most
``ping_interval + ping_timeout`` seconds after it went silent** (plus the driver's scheduling
delay).  A peer that stops *reading* is caught the same way: our PING never reaches it.

Slow start: a link's first PING goes out the moment the link is up, often while the peer is
still busy bringing up its other links (a gateway with fifty peers starts fifty handshakes at
once).  ``first_ping_timeout`` gives that first PING a longer deadline (peering uses the
connect timeout: the peer was just given that long to finish its handshake), so a starved but
live peer is not declared down before it had a chance to answer.  Every later PING has
``ping_timeout``.  The bound becomes **``ping_interval + max(ping_timeout,
first_ping_timeout)``**: a peer that goes silent before answering the first PING is caught by
that PING's longer deadline, one that goes silent later by the ordinary bound above.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LivenessPolicy:
    """How often to PING and how long to wait for the ack."""

    ping_interval: float = 10.0
    ping_timeout: float = 5.0
    #: The deadline of a link's first PING (None: ``ping_timeout``); never shorter than it.
    first_ping_timeout: float | None = None

    def __post_init__(self) -> None:
        if self.ping_interval <= 0 or self.ping_timeout <= 0:
            raise ValueError("ping_interval and ping_timeout must be positive")
        if self.first_ping_timeout is not None and self.first_ping_timeout <= 0:
            raise ValueError("first_ping_timeout must be positive")

    @property
    def first_timeout(self) -> float:
        """The first PING's deadline: the longer of ``ping_timeout`` and ``first_ping_timeout``."""
        first = self.first_ping_timeout
        return self.ping_timeout if first is None else max(first, self.ping_timeout)

    @property
    def detection_bound(self) -> float:
        """Worst-case seconds from a peer going silent to it being declared down."""
        return self.ping_interval + self.first_timeout


@dataclass(frozen=True, slots=True)
class LivenessState:
    next_ping_at: float
    outstanding: bytes | None = None
    deadline: float | None = None
    sequence: int = 0
    last_rtt: float | None = None
    sent_at: float | None = None

    @property
    def answered(self) -> bool:
        """True once the peer has answered at least one of our PINGs."""
        return self.last_rtt is not None


@dataclass(frozen=True, slots=True)
class SendPing:
    payload: bytes


@dataclass(frozen=True, slots=True)
class SleepUntil:
    when: float


@dataclass(frozen=True, slots=True)
class DeclareDown:
    overdue_since: float


Action = SendPing | SleepUntil | DeclareDown


def start(policy: LivenessPolicy, now: float, *, ping_at_once: bool = False) -> LivenessState:
    """The first PING goes out one interval after the link came up, or at once.

    ``ping_at_once``: a link is only *established* once the peer has answered a PING (see
    :attr:`LivenessState.answered`); pinging at once tells that, and the round-trip time,
    without waiting a whole interval.  The detection bound holds either way.
    """
    return LivenessState(next_ping_at=now if ping_at_once else now + policy.ping_interval)


def poll(state: LivenessState, policy: LivenessPolicy, now: float) -> tuple[LivenessState, Action]:
    if state.outstanding is not None and state.deadline is not None:
        if now >= state.deadline:
            return state, DeclareDown(overdue_since=state.deadline)
        # One PING in flight at most: while it is outstanding only its deadline matters.
        return state, SleepUntil(state.deadline)
    if now >= state.next_ping_at:
        sequence = state.sequence + 1
        payload = sequence.to_bytes(8, "big")
        timeout = policy.first_timeout if sequence == 1 else policy.ping_timeout
        new = LivenessState(
            next_ping_at=now + policy.ping_interval,
            outstanding=payload,
            deadline=now + timeout,
            sequence=sequence,
            last_rtt=state.last_rtt,
            sent_at=now,
        )
        return new, SendPing(payload)
    return state, SleepUntil(state.next_ping_at)


def on_ack(state: LivenessState, payload: bytes, now: float) -> LivenessState:
    if state.outstanding is None or payload != state.outstanding:
        return state
    rtt = None if state.sent_at is None else now - state.sent_at
    return LivenessState(
        next_ping_at=state.next_ping_at,
        outstanding=None,
        deadline=None,
        sequence=state.sequence,
        last_rtt=rtt,
        sent_at=None,
    )
