"""A route's mirror copies a request with a body: teed as the body streams to the primary,
bounded, sent once the body was read, and never in the primary's way.

``forward`` gets an ``unrouted`` that reads the body the way the forwarders do (to its end,
then the trailers) and records it per authority; the last test crosses a real HTTP/2 link."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import trio
import trio.testing

from discovery.model import ServiceName
from gateway.http.exchange import Body, CallContext, Request, ResponseWriter
from gateway.http.message import Headers
from gateway.observe.record import ExchangeRecord
from gateway.routes.mirrors import Mirrors, mirror_gauges
from overlay.h2.stream import H2Stream
from tests.gateway.router.router_kit import (
    API,
    BytesBody,
    Collect,
    StandInCluster,
    ctx,
    http_echo_backend,
    make_router,
    peer,
    read_body,
    serving,
)
from tests.gateway.routes.routes_kit import draws, rules


def route(mirror: str = "") -> str:
    extra = f", {mirror}" if mirror else ""
    return (
        '[[routes]]\naddress = "api.default"\n'
        f'mirror = {{ service = "shadow.default", site = "b"{extra} }}\n'
    )


def post(headers: Headers = ()) -> Request:
    return Request(b"POST", b"http", b"api.default.isthmus", b"/orders", headers)


@dataclass
class Got:
    request: Request
    body: bytes
    trailers: Headers
    ctx: CallContext


@dataclass
class Backends:
    """The rest of the router, in memory: reads each body to its end, as a forwarder does."""

    got: dict[bytes, list[Got]] = field(default_factory=dict)
    events: list[str] = field(default_factory=list)
    mirror_hangs: bool = False
    mirror_fails: bool = False
    primary_reads: int | None = None  # pieces the primary reads before failing (None: all)
    primary_stops: int | None = None  # bytes after which the primary stops reading (answered)

    async def __call__(
        self,
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        rec: ExchangeRecord | None,
    ) -> None:
        mirror = request.authority.startswith(b"shadow.")
        if mirror and self.mirror_hangs:
            await trio.sleep_forever()
        if mirror and self.mirror_fails:
            raise OSError("the mirror's backend is down")
        data = bytearray()
        pieces = 0
        while piece := await body.receive_some(65536):
            data += piece
            pieces += 1
            if not mirror and self.primary_reads is not None and pieces >= self.primary_reads:
                raise OSError("the primary's backend went away mid-body")
            if not mirror and self.primary_stops is not None and len(data) >= self.primary_stops:
                break  # the endpoint answered before the body's end was read
        self.events.append("mirror" if mirror else "primary read")
        got = Got(request, bytes(data), body.trailers, ctx)
        self.got.setdefault(request.authority, []).append(got)


PRIMARY, SHADOW = b"api.default.isthmus", b"shadow.default.b.isthmus"


async def _forward(
    mirrors: Mirrors, toml: str, body: Body, backends: Backends, **kw: object
) -> None:
    routes = rules(toml, mirrors=mirrors, draw=draws([0.0]))
    await routes.forward(post(**kw), body, Collect(), ctx(), None, backends)  # type: ignore[arg-type]


async def test_a_chunked_body_reaches_the_primary_then_the_mirror_identical() -> None:
    mirrors, backends = Mirrors(), Backends()
    pieces = [b"first piece;", b"x" * 30_000, b"last"]
    async with trio.open_nursery() as nursery:
        await nursery.start(mirrors.serve)
        await _forward(
            mirrors,
            route(),
            BytesBody(*pieces, trailers=((b"x-checksum", b"7"),)),
            backends,
            headers=((b"content-type", b"text/plain"),),
        )
        await trio.testing.wait_all_tasks_blocked()
        assert mirrors.in_flight == 0
        nursery.cancel_scope.cancel()
    (primary,) = backends.got[PRIMARY]
    (mirror,) = backends.got[SHADOW]
    assert primary.body == mirror.body == b"".join(pieces)
    assert primary.trailers == mirror.trailers == ((b"x-checksum", b"7"),)
    assert mirror.request.headers == primary.request.headers
    assert (mirror.request.method, mirror.request.path) == (b"POST", b"/orders")
    assert backends.events == ["primary read", "mirror"]  # sent once the body was read
    assert (mirrors.started, mirrors.dropped, mirrors.failed, mirrors.budget.held) == (1, 0, 0, 0)
    assert mirrors.budget.peak == len(b"".join(pieces))


async def test_a_body_over_the_cap_reaches_the_primary_intact_and_the_mirror_not() -> None:
    mirrors, backends = Mirrors(), Backends()
    async with trio.open_nursery() as nursery:
        await nursery.start(mirrors.serve)
        # Chunked (no length known): dropped when the copy grows past the cap.
        await _forward(
            mirrors, route("max_body_bytes = 10"), BytesBody(b"123456", b"789012"), backends
        )
        # A declared length over the cap: dropped before a byte is copied.
        await _forward(
            mirrors,
            route("max_body_bytes = 10"),
            BytesBody(b"12345678901"),
            backends,
            headers=((b"content-length", b"11"),),
        )
        # Exactly the cap is mirrored.
        await _forward(mirrors, route("max_body_bytes = 10"), BytesBody(b"1234567890"), backends)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [g.body for g in backends.got[PRIMARY]] == [
        b"123456789012",
        b"12345678901",
        b"1234567890",
    ]
    assert [g.body for g in backends.got[SHADOW]] == [b"1234567890"]
    assert mirrors.drops["body_too_large"] == 2 and mirrors.dropped == 2
    assert mirrors.budget.held == 0
    dropped = {f.name: f for f in mirror_gauges(mirrors)}["isthmus_route_mirror_dropped_total"]
    assert dict(dropped.samples)[("body_too_large",)] == 2.0


async def test_a_full_gateway_budget_drops_the_mirror_not_the_primary() -> None:
    mirrors, backends = Mirrors(budget=8), Backends()
    async with trio.open_nursery() as nursery:
        await nursery.start(mirrors.serve)
        await _forward(mirrors, route(), BytesBody(b"12345", b"67890"), backends)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [g.body for g in backends.got[PRIMARY]] == [b"1234567890"]
    assert SHADOW not in backends.got
    assert mirrors.drops["buffer_budget"] == 1 and mirrors.budget.held == 0


async def test_a_primary_that_stops_reading_sends_no_truncated_copy() -> None:
    mirrors, backends = Mirrors(), Backends(primary_reads=1)
    async with trio.open_nursery() as nursery:
        await nursery.start(mirrors.serve)
        try:
            await _forward(mirrors, route(), BytesBody(b"12345", b"67890"), backends)
        except OSError as exc:
            assert "mid-body" in str(exc)  # the primary's own failure, as without a mirror
        else:
            raise AssertionError("the primary's failure was hidden")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert SHADOW not in backends.got
    assert mirrors.drops["body_unfinished"] == 1 and mirrors.budget.held == 0


async def test_a_declared_body_copied_whole_is_sent_even_if_its_end_was_never_read() -> None:
    mirrors = Mirrors()
    async with trio.open_nursery() as nursery:
        await nursery.start(mirrors.serve)
        sized = Backends(primary_stops=10)  # every declared byte read, not the end
        await _forward(
            mirrors,
            route(),
            BytesBody(b"12345", b"67890"),
            sized,
            headers=((b"content-length", b"10"),),
        )
        chunked = Backends(primary_stops=5)  # no length declared: a copy short of the end
        await _forward(mirrors, route(), BytesBody(b"12345", b"67890"), chunked)
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert [g.body for g in sized.got[SHADOW]] == [b"1234567890"]
    assert SHADOW not in chunked.got
    assert mirrors.drops["body_unfinished"] == 1 and mirrors.started == 1
    assert mirrors.budget.held == 0


async def test_a_hanging_mirror_is_cut_at_its_timeout_and_the_caller_never_waits(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mirrors, backends = Mirrors(), Backends(mirror_hangs=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(mirrors.serve)
        await _forward(mirrors, route("timeout_s = 2"), BytesBody(b"payload"), backends)
        # The caller's exchange is over while the mirror still hangs, holding its copy.
        assert [g.body for g in backends.got[PRIMARY]] == [b"payload"]
        assert mirrors.in_flight == 1 and mirrors.budget.held == len(b"payload")
        await trio.sleep(1.9)
        assert mirrors.in_flight == 1 and mirrors.timed_out == 0
        await trio.sleep(0.2)
        assert mirrors.in_flight == 0 and mirrors.timed_out == 1 and mirrors.budget.held == 0
        nursery.cancel_scope.cancel()


async def test_a_failing_mirror_is_only_counted_and_its_own_deadline_is_not_the_callers(
    autojump_clock: trio.testing.MockClock,
) -> None:
    mirrors, failing = Mirrors(), Backends(mirror_fails=True)
    async with trio.open_nursery() as nursery:
        await nursery.start(mirrors.serve)
        await _forward(mirrors, route(), BytesBody(b"payload"), failing)
        await trio.testing.wait_all_tasks_blocked()
        assert [g.body for g in failing.got[PRIMARY]] == [b"payload"]
        assert (mirrors.failed, mirrors.in_flight, mirrors.budget.held) == (1, 0, 0)
        ok = Backends()
        start = trio.current_time()
        await _forward(mirrors, route("timeout_s = 3"), BytesBody(b"x"), ok)
        await trio.testing.wait_all_tasks_blocked()
        (mirror,) = ok.got[SHADOW]
        assert mirror.ctx.deadline == mirror.ctx.max_deadline == start + 3
        nursery.cancel_scope.cancel()


async def test_a_body_copy_crosses_a_real_link_to_a_mirror_in_another_site() -> None:
    seen: list[dict[str, object]] = []

    async def recording(stream: H2Stream) -> None:
        fields = dict(stream.request_headers)
        body = await read_body(stream.receive_some)
        seen.append({"authority": fields[b":authority"], "body": body})
        await stream.send_headers([(b":status", b"204")], end_stream=True)

    shadow = ServiceName("shadow", "default")
    mirrors = Mirrors()
    payload = b"".join(b"%05d," % i for i in range(5000))  # 30 000 bytes, several pieces
    async with serving(http_echo_backend) as port, peer(recording) as link:
        router = make_router(
            {API: ("a", "b"), shadow: ("b",)},
            cluster=StandInCluster(http={API: port}),
            links={"b": link},
        )
        router.rules = rules(route(), mirrors=mirrors, draw=draws([0.0]))
        async with trio.open_nursery() as nursery:
            await nursery.start(mirrors.serve)
            out = Collect()
            headers = ((b"content-length", b"%d" % len(payload)),)
            chunks = [payload[i : i + 7000] for i in range(0, len(payload), 7000)]
            await router.forward(post(headers), BytesBody(*chunks), out, ctx())
            answer = json.loads(bytes(out.body))
            assert answer["site"] == "a" and answer["body"].encode("latin-1") == payload
            with trio.fail_after(10):  # hang guard only
                while mirrors.in_flight or not seen:  # noqa: ASYNC110 (a counter, no event)
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert seen == [{"authority": SHADOW, "body": payload}]
    assert (mirrors.started, mirrors.failed, mirrors.dropped, mirrors.budget.held) == (1, 0, 0, 0)
