"""Deadlines only shrink: a caller's x-isthmus-deadline-ms shortens the route timeout and
never extends it; an expired one is a 504 before any site or endpoint is called."""

from __future__ import annotations

import pytest
import trio

from gateway.http.deadline import BadDeadline, DeadlineExpired, check_not_expired, from_caller
from gateway.http.exchange import CallContext, EmptyBody
from gateway.http.overlay_headers import decode_context, encode_context
from tests.gateway.router.router_kit import API, Collect, StandInCluster, ctx, get, make_router


def test_the_caller_can_shorten_but_never_extend() -> None:
    base = CallContext("a", None, 115.0)  # 15 s left at now=100
    assert from_caller(((b"x-isthmus-deadline-ms", b"2500"),), base, now=100.0).deadline == 102.5
    assert from_caller(((b"x-isthmus-deadline-ms", b"60000"),), base, now=100.0) is base
    assert from_caller((), base, now=100.0) is base


@pytest.mark.parametrize("value", [b"", b"-1", b"1.5", b"abc", b"1" * 13])
def test_a_malformed_caller_deadline_is_400(value: bytes) -> None:
    with pytest.raises(BadDeadline) as info:
        from_caller(((b"x-isthmus-deadline-ms", value),), CallContext("a", None, 1.0), now=0.0)
    assert info.value.http_status == 400


def test_two_caller_deadlines_are_400() -> None:
    headers = ((b"x-isthmus-deadline-ms", b"1"), (b"x-isthmus-deadline-ms", b"2"))
    with pytest.raises(BadDeadline):
        from_caller(headers, CallContext("a", None, 1.0), now=0.0)


def test_expired_is_504() -> None:
    with pytest.raises(DeadlineExpired) as info:
        check_not_expired(CallContext("a", None, 5.0), now=5.0, what="api")
    assert info.value.http_status == 504
    check_not_expired(CallContext("a", None, 5.001), now=5.0, what="api")


def test_the_link_header_shrinks_by_the_time_spent_and_is_capped_by_the_next_hop() -> None:
    sent = encode_context(CallContext("a", None, 10.0), local_site="a", now=7.5)
    assert (b"isthmus-deadline-ms", b"2500") in sent
    got = decode_context(sent, peer_site="a", now=50.0, route_timeout=15.0)
    assert got.deadline == 52.5  # what was left, from the arrival: never more
    capped = decode_context(
        encode_context(CallContext("a", None, 100.0), local_site="a", now=0.0),
        peer_site="a",
        now=0.0,
        route_timeout=15.0,
    )
    assert capped.deadline == 15.0


async def test_the_router_answers_an_expired_deadline_without_calling_a_site() -> None:
    cluster = StandInCluster(http={API: 1})  # a port nothing listens on: never dialled
    router = make_router({API: ("a",)}, cluster=cluster)
    request = get(b"api.default.isthmus", headers=((b"x-isthmus-deadline-ms", b"0"),))
    with pytest.raises(DeadlineExpired):
        await router.forward(request, EmptyBody(), Collect(), ctx())
    assert cluster.calls == []


async def test_the_router_bounds_the_walk_by_the_callers_deadline(
    autojump_clock: trio.abc.Clock,
) -> None:
    class Hanging(StandInCluster):
        async def forward(self, *args: object, **kwargs: object) -> None:
            await trio.sleep_forever()

    router = make_router({API: ("a",)}, cluster=Hanging(), route_timeout=15.0)
    request = get(b"api.default.isthmus", headers=((b"x-isthmus-deadline-ms", b"2000"),))
    start = trio.current_time()
    with pytest.raises(Exception) as info:
        await router.forward(request, EmptyBody(), Collect(), ctx(60.0))
    assert getattr(info.value, "http_status", None) == 504
    assert trio.current_time() - start == pytest.approx(2.0)
