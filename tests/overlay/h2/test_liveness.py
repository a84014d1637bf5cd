"""Link liveness: the pure PING timing core, and the trio driver declaring a silent link down
within ``ping_interval + ping_timeout`` (autojump clock: virtual time, real h2 on both ends)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from overlay.h2.connection import H2Connection
from overlay.h2.liveness import (
    DeclareDown,
    LivenessPolicy,
    LivenessState,
    SendPing,
    SleepUntil,
    on_ack,
    poll,
    start,
)
from overlay.h2.stream import H2Stream, LinkDown

pytestmark = pytest.mark.usefixtures("any_engine")

POLICY = LivenessPolicy(ping_interval=2.0, ping_timeout=1.0)
REQ = [(":method", "POST"), (":scheme", "https"), (":path", "/"), (":authority", "a.b.isthmus")]


# -- pure core -------------------------------------------------------------------------------


def test_ping_cycle() -> None:
    state = start(POLICY, now=100.0)
    state, action = poll(state, POLICY, 100.0)
    assert action == SleepUntil(102.0)
    state, action = poll(state, POLICY, 102.0)
    assert isinstance(action, SendPing) and len(action.payload) == 8
    state, wait = poll(state, POLICY, 102.5)
    assert wait == SleepUntil(103.0)  # the deadline of the outstanding PING
    state = on_ack(state, b"wrong!!!", 102.6)
    assert state.outstanding is not None  # a foreign ack changes nothing
    state = on_ack(state, action.payload, 102.7)
    assert state.outstanding is None and state.last_rtt == pytest.approx(0.7)
    state, action = poll(state, POLICY, 103.0)
    assert action == SleepUntil(104.0)  # fixed cadence from the previous send


def test_ping_at_once_and_answered() -> None:
    """Links PING as soon as they come up: the first answer marks them established."""
    state = start(POLICY, now=100.0, ping_at_once=True)
    state, action = poll(state, POLICY, 100.0)
    assert isinstance(action, SendPing) and not state.answered
    state = on_ack(state, action.payload, 100.2)
    assert state.answered
    _, action = poll(state, POLICY, 100.5)
    assert action == SleepUntil(102.0)  # then the usual cadence


def test_unanswered_ping_declares_down_at_its_deadline() -> None:
    state = start(POLICY, now=0.0)
    state, action = poll(state, POLICY, 2.0)
    assert isinstance(action, SendPing)
    _, action = poll(state, POLICY, 2.999)
    assert isinstance(action, SleepUntil)
    _, action = poll(state, POLICY, 3.0)
    assert action == DeclareDown(overdue_since=3.0)


def test_first_ping_gets_the_longer_deadline() -> None:
    """A just-established link's first PING waits ``first_ping_timeout``; later ones don't."""
    policy = LivenessPolicy(ping_interval=2.0, ping_timeout=1.0, first_ping_timeout=10.0)
    assert policy.detection_bound == 12.0
    state = start(policy, now=0.0, ping_at_once=True)
    state, action = poll(state, policy, 0.0)
    assert isinstance(action, SendPing)
    _, wait = poll(state, policy, 5.0)
    assert wait == SleepUntil(10.0)  # a starved peer answering after 5 s keeps the link
    state = on_ack(state, action.payload, 5.0)
    state, action = poll(state, policy, 5.0)
    assert isinstance(action, SendPing)  # the cadence is from the first send: overdue now
    _, action = poll(state, policy, 6.0)
    assert action == DeclareDown(overdue_since=6.0)  # the second PING: ping_timeout only
    # Never shorter than ping_timeout, and unanswered it is still a DeclareDown.
    short = LivenessPolicy(ping_interval=2.0, ping_timeout=3.0, first_ping_timeout=1.0)
    state, action = poll(start(short, now=0.0, ping_at_once=True), short, 0.0)
    assert poll(state, short, 3.0)[1] == DeclareDown(overdue_since=3.0)


def simulate(
    policy: LivenessPolicy, silent_from: float, rtt: float, *, ping_at_once: bool = False
) -> float:
    """Drive the core like the trio loop does; the peer answers after ``rtt`` until silent."""
    state: LivenessState = start(policy, 0.0, ping_at_once=ping_at_once)
    now = 0.0
    pending_ack: tuple[float, bytes] | None = None
    for _ in range(10_000):
        if pending_ack is not None and pending_ack[0] <= now:
            state = on_ack(state, pending_ack[1], now)
            pending_ack = None
        state, action = poll(state, policy, now)
        if isinstance(action, DeclareDown):
            return now
        if isinstance(action, SendPing):
            if now + rtt < silent_from:
                pending_ack = (now + rtt, action.payload)
            continue
        now = action.when if pending_ack is None else min(action.when, pending_ack[0])
    raise AssertionError("never declared down")


@given(
    interval=st.floats(0.1, 30.0),
    timeout=st.floats(0.1, 30.0),
    silent_from=st.floats(0.0, 200.0),
    rtt_fraction=st.floats(0.0, 0.9),
)
def test_detection_bound_holds(
    interval: float, timeout: float, silent_from: float, rtt_fraction: float
) -> None:
    policy = LivenessPolicy(interval, timeout)
    down_at = simulate(policy, silent_from, rtt=timeout * rtt_fraction)
    assert down_at <= silent_from + policy.detection_bound + 1e-9
    assert down_at >= silent_from  # never before the peer actually went quiet


@given(
    interval=st.floats(0.1, 30.0),
    timeout=st.floats(0.1, 30.0),
    first=st.floats(0.1, 60.0),
    silent_from=st.floats(0.0, 200.0),
    rtt_fraction=st.floats(0.0, 0.9),
    at_once=st.booleans(),
)
def test_detection_bound_holds_with_a_first_ping_timeout(
    interval: float,
    timeout: float,
    first: float,
    silent_from: float,
    rtt_fraction: float,
    at_once: bool,
) -> None:
    policy = LivenessPolicy(interval, timeout, first_ping_timeout=first)
    down_at = simulate(policy, silent_from, rtt=timeout * rtt_fraction, ping_at_once=at_once)
    assert down_at <= silent_from + policy.detection_bound + 1e-9
    assert down_at >= silent_from


# -- trio driver -----------------------------------------------------------------------------


class Blackhole(trio.abc.Stream):
    """Wrap a stream; once ``cut``, sends vanish and nothing is received (a dropped veth)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.cut = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.cut:
            await trio.lowlevel.checkpoint()
            return
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        while True:
            if self.cut:
                await trio.sleep_forever()
            data = await self.inner.receive_some(max_bytes)
            if not self.cut:
                return data

    async def aclose(self) -> None:
        await self.inner.aclose()


async def idle(stream: H2Stream) -> None:
    await trio.sleep_forever()


@asynccontextmanager
async def linked(
    handler: Callable[[H2Stream], Awaitable[None]] = idle,
) -> AsyncIterator[tuple[H2Connection, H2Connection, Blackhole]]:
    a, b = trio.testing.memory_stream_pair()
    hole = Blackhole(a)
    client = H2Connection(hole, client_side=True, ping_interval=2.0, ping_timeout=1.0)
    server = H2Connection(b, client_side=False, handler=handler, ping_interval=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        yield client, server, hole
        nursery.cancel_scope.cancel()


async def test_healthy_link_stays_up(autojump_clock: trio.abc.Clock) -> None:
    async with linked() as (client, _server, _hole):
        await trio.sleep(60)  # 30 PING intervals of virtual time
        stats = client.statistics()
        assert not stats.closed and client.close_reason is None
        assert stats.last_ping_rtt is not None


@pytest.mark.parametrize("cut_after", [0.01, 1.0, 1.99, 2.5, 7.3])
async def test_blackholed_link_is_declared_down_within_bound(
    cut_after: float, autojump_clock: trio.abc.Clock
) -> None:
    async with linked() as (client, _server, hole):
        stream = await client.open_stream(REQ)
        await trio.sleep(cut_after)
        hole.cut = True
        cut_at = trio.current_time()
        with pytest.raises(LinkDown), trio.fail_after(30):
            await stream.receive_some()  # a waiting consumer learns of it too
        reason = await client.wait_closed()
        down_after = trio.current_time() - cut_at
        assert isinstance(reason, LinkDown)
        assert 0 < down_after <= 2.0 + 1.0 + 0.01  # ping_interval + ping_timeout
        with pytest.raises(LinkDown):
            await client.open_stream(REQ)


async def test_peer_that_stops_reading_is_declared_down(autojump_clock: trio.abc.Clock) -> None:
    # A lockstep pair: send_all only completes when the far side reads, and it never does.
    near, _far = trio.testing.lockstep_stream_pair()
    client = H2Connection(near, client_side=True, ping_interval=2.0, ping_timeout=1.0)
    async with trio.open_nursery() as nursery:
        started = trio.current_time()
        await nursery.start(client.serve)
        with trio.fail_after(30):
            reason = await client.wait_closed()
        assert isinstance(reason, LinkDown)
        assert trio.current_time() - started <= 3.0 + 0.01


async def test_wait_ping_answered_needs_a_real_answer(autojump_clock: trio.abc.Clock) -> None:
    """``wait_ping_answered`` returns once the peer acked a PING (sent at once with
    ``ping_at_once``), and never for a peer that does not answer."""
    a, b = trio.testing.memory_stream_pair()
    hole = Blackhole(a)
    client = H2Connection(
        hole, client_side=True, ping_interval=2.0, ping_timeout=1.0, ping_at_once=True
    )
    server = H2Connection(b, client_side=False, handler=idle, ping_interval=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        with trio.fail_after(0.5):  # well before the first interval: the PING went at once
            await client.wait_ping_answered()
        assert client.ping_answered
        nursery.cancel_scope.cancel()
    c, d = trio.testing.memory_stream_pair()
    silent = Blackhole(c)
    silent.cut = True
    lonely = H2Connection(silent, client_side=True, ping_interval=2.0, ping_timeout=1.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(lonely.serve)
        with trio.move_on_after(30):
            await lonely.wait_ping_answered()
        assert not lonely.ping_answered
        nursery.cancel_scope.cancel()
    del d


async def test_answered_ping_wakes_the_liveness_task_once(autojump_clock: trio.abc.Clock) -> None:
    """Idle cost: an ack moves the liveness task's sleep to the next PING time, so a link at
    rest wakes it once per PING (to send it), not also at the answered PING's deadline."""
    async with linked() as (client, _server, _hole):
        await trio.sleep(60)  # 30 PING intervals of virtual time
        assert client._liveness is not None
        pings = client._liveness.sequence
        assert pings >= 29 and client.close_reason is None
        assert client._liveness_wakeups <= pings + 1


class SlowStart(trio.abc.Stream):
    """Wrap a stream whose owner reads nothing for its first ``delay`` seconds (a gateway
    starved by its other links' handshakes), then normally."""

    def __init__(self, inner: trio.abc.Stream, delay: float) -> None:
        self.inner = inner
        self.until = trio.current_time() + delay

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.sleep_until(self.until)
        return bytes(await self.inner.receive_some(max_bytes))

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize("first_ping_timeout", [None, 10.0])
async def test_slow_starting_peer_keeps_its_link_with_a_first_ping_timeout(
    first_ping_timeout: float | None, autojump_clock: trio.abc.Clock
) -> None:
    """The peer answers its first PING only after 6 s (ping_timeout 1 s): with a 10 s first
    deadline the link stays up and is established; without one it is declared down."""
    a, b = trio.testing.memory_stream_pair()
    client = H2Connection(
        a,
        client_side=True,
        ping_interval=2.0,
        ping_timeout=1.0,
        ping_at_once=True,
        first_ping_timeout=first_ping_timeout,
    )
    server = H2Connection(SlowStart(b, 6.0), client_side=False, handler=idle, ping_interval=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        await trio.sleep(30)
        if first_ping_timeout is None:
            assert isinstance(client.close_reason, LinkDown)
        else:
            assert client.close_reason is None and client.ping_answered
        nursery.cancel_scope.cancel()


async def test_peer_silent_from_the_start_is_declared_down_within_the_first_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    """A dead peer is still caught: by the first PING's deadline (bounded, documented)."""
    near, _far = trio.testing.memory_stream_pair()  # nobody ever answers
    client = H2Connection(
        near,
        client_side=True,
        ping_interval=2.0,
        ping_timeout=1.0,
        ping_at_once=True,
        first_ping_timeout=10.0,
    )
    async with trio.open_nursery() as nursery:
        started = trio.current_time()
        await nursery.start(client.serve)
        with trio.fail_after(60):
            reason = await client.wait_closed()
        assert isinstance(reason, LinkDown)
        assert 10.0 <= trio.current_time() - started <= 2.0 + 10.0 + 0.01
