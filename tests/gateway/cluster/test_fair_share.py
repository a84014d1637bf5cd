"""Each caller's share of a peer's link slots: the bound, the bounded wait, the 503."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from foundation.spiffe_id import SpiffeId
from gateway.cluster.fair_share import (
    CallerOverShare,
    CallerShares,
    SiteShares,
    caller_key,
    may_take,
)
from gateway.cluster.held_stream import HeldStream
from gateway.http.exchange import CallContext


def test_may_take_up_to_the_limit() -> None:
    assert may_take(0, 2) and may_take(1, 2)
    assert not may_take(2, 2)


def test_the_caller_is_its_spiffe_id_else_its_address() -> None:
    sid = SpiffeId.parse("spiffe://east.test/ns/default/sa/web")
    assert caller_key(CallContext("east", sid, 0.0, caller_address="10.0.0.1")) == (
        "spiffe:spiffe://east.test/ns/default/sa/web"
    )
    assert caller_key(CallContext("east", None, 0.0, caller_address="10.0.0.1")) == (
        "address:10.0.0.1"
    )
    assert caller_key(CallContext("east", None, 0.0)) is None


async def test_over_its_share_a_caller_waits_then_gets_a_503_naming_the_limit(
    autojump_clock: trio.abc.Clock,
) -> None:
    shares = CallerShares("west", limit=2, wait_s=1.0)
    held = [await shares.hold("a"), await shares.hold("a")]
    start = trio.current_time()
    with pytest.raises(CallerOverShare) as info:
        await shares.hold("a")
    assert trio.current_time() - start == pytest.approx(1.0)  # virtual time: the bounded wait
    assert "link_caller_max_streams = 2" in str(info.value)
    assert info.value.http_status == 503 and not info.value.retry_elsewhere
    assert shares.refused == 1
    # Another caller is not affected: its slots are its own.
    other = await shares.hold("b")
    assert shares.held("b") == 1
    other()
    for release in held:
        release()
    assert shares.held("a") == 0


async def test_a_waiting_caller_gets_the_slot_its_own_stream_frees(
    autojump_clock: trio.abc.Clock,
) -> None:
    shares = CallerShares("west", limit=1, wait_s=5.0)
    first = await shares.hold("a")
    got: list[float] = []

    async def second() -> None:
        release = await shares.hold("a")
        got.append(trio.current_time())
        release()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(second)
        await trio.sleep(2.0)
        assert not got  # still waiting: the caller's one slot is taken
        first()
        first()  # a second release is a no-op, never a slot given away
    assert got == [pytest.approx(2.0)]
    assert shares.held("a") == 0


async def test_an_unknown_caller_is_not_counted() -> None:
    shares = CallerShares("west", limit=1, wait_s=0.0)
    for _ in range(3):
        await shares.hold(None)
    assert shares.refused == 0


async def test_a_tunnel_holds_its_slot_until_closed() -> None:
    shares = SiteShares(limit=1, wait_s=0.0)
    west = shares.for_site("west")
    assert shares.for_site("west") is west
    a, b = trio.testing.memory_stream_pair()
    release = await west.hold("a")
    tunnel = HeldStream(a, release)
    await tunnel.send_all(b"x")
    assert await b.receive_some() == b"x"
    with pytest.raises(CallerOverShare):
        await west.hold("a")
    await tunnel.aclose()
    again = await west.hold("a")  # the closed tunnel's slot is free again
    again()
    await b.aclose()
