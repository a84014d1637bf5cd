"""The link pool's decisions (pure): property tests of what must always hold, and examples."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from overlay.peering.link_pool import (
    LinkLoad,
    PoolPolicy,
    least_loaded,
    pick,
    to_close,
    want_more,
)


@st.composite
def link_loads(draw: st.DrawFn) -> LinkLoad:
    max_streams = draw(st.integers(1, 50))
    return LinkLoad(
        fixed_streams=draw(st.integers(0, 1)),
        open_streams=draw(st.integers(0, max_streams)),
        max_streams=max_streams,
        extra=draw(st.booleans()),
        draining=draw(st.booleans()),
        idle_since=draw(st.none() | st.floats(0.0, 200.0)),
    )


pools = st.lists(link_loads(), max_size=8)
policies = st.builds(
    PoolPolicy,
    max_links=st.integers(1, 8),
    high_water=st.floats(0.05, 1.0),
    idle_close_s=st.floats(0.0, 100.0),
)


@given(pools)
def test_never_picks_a_full_or_draining_link_while_one_has_room(links: list[LinkLoad]) -> None:
    chosen = pick(links)
    with_room = [i for i, link in enumerate(links) if link.usable and link.room > 0]
    if not with_room:
        assert chosen is None
        return
    assert chosen in with_room
    share = links[chosen].open_streams / links[chosen].max_streams
    assert all(share <= links[i].open_streams / links[i].max_streams for i in with_room)


@given(pools)
def test_waits_on_a_usable_link(links: list[LinkLoad]) -> None:
    chosen = least_loaded(links)
    assert (chosen is None) == (not any(link.usable for link in links))
    assert chosen is None or links[chosen].usable


@given(pools, st.integers(0, 3), policies, st.integers(0, 3))
def test_never_opens_past_the_maximum(
    links: list[LinkLoad], opening: int, policy: PoolPolicy, closing: int
) -> None:
    if want_more(links, opening=opening, policy=policy, closing=closing):
        assert len(links) + opening + closing + 1 <= policy.max_links
        assert opening == 0
        assert all(link.over(policy.high_water) for link in links if link.usable)


@given(pools, st.floats(0.0, 400.0), policies)
def test_never_closes_the_last_link_the_primary_or_a_busy_one(
    links: list[LinkLoad], now: float, policy: PoolPolicy
) -> None:
    chosen = to_close(links, now=now, policy=policy)
    if chosen is None:
        return
    link = links[chosen]
    assert link.extra and link.usable and link.open_streams <= link.fixed_streams
    assert link.idle_since is not None and now - link.idle_since >= policy.idle_close_s
    rest = [other for i, other in enumerate(links) if i != chosen and other.usable]
    assert rest, "the last usable link must stay"
    # closing it must not make the pool want a link again at once
    assert not all(other.over(policy.high_water) for other in rest)


def test_the_primary_wins_a_tie() -> None:
    links = [LinkLoad(3, 10), LinkLoad(3, 10, extra=True)]
    assert pick(links) == 0


def test_a_full_link_is_skipped_for_one_with_room() -> None:
    assert pick([LinkLoad(8, 8), LinkLoad(7, 8, extra=True)]) == 1
    assert pick([LinkLoad(8, 8), LinkLoad(8, 8, extra=True)]) is None


def test_opens_another_link_at_the_high_water_mark_only() -> None:
    policy = PoolPolicy(max_links=2, high_water=0.8)
    assert not want_more([LinkLoad(6, 8)], opening=0, policy=policy)  # 75 %
    assert want_more([LinkLoad(7, 8)], opening=0, policy=policy)  # 87.5 %
    assert not want_more([LinkLoad(7, 8)], opening=1, policy=policy)  # one is on its way
    assert not want_more([LinkLoad(8, 8), LinkLoad(8, 8, extra=True)], opening=0, policy=policy)
    assert not want_more([LinkLoad(8, 8)], opening=0, policy=PoolPolicy(max_links=1))


def test_an_idle_extra_link_goes_after_its_idle_time() -> None:
    policy = PoolPolicy(idle_close_s=30.0)
    links = [LinkLoad(1, 8), LinkLoad(0, 8, extra=True, idle_since=100.0)]
    assert to_close(links, now=129.0, policy=policy) is None
    assert to_close(links, now=130.0, policy=policy) == 1
    carrier_only = [LinkLoad(1, 8), LinkLoad(1, 8, extra=True, idle_since=100.0, fixed_streams=1)]
    assert to_close(carrier_only, now=130.0, policy=policy) == 1
    busy_primary = [LinkLoad(8, 8), LinkLoad(0, 8, extra=True, idle_since=0.0)]
    assert to_close(busy_primary, now=130.0, policy=policy) is None


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [({"max_links": 0}, "max_links"), ({"high_water": 0.0}, "high_water")],
)
def test_policy_is_validated(kwargs: dict[str, float], field: str) -> None:
    with pytest.raises(ValueError, match=field):
        PoolPolicy(**kwargs)  # type: ignore[arg-type]
