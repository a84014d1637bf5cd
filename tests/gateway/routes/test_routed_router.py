"""The router with ``[[routes]]``: real local endpoints and a real HTTP/2 link to a peer.

Draws are handed out in order (``draws``), so which backend a request goes to is exact."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio

from discovery.model import ServiceName
from gateway.config.routes import Backend, RouteConfig
from gateway.http.errors import RateLimited, ResetInstead
from gateway.http.exchange import (
    Body,
    CallContext,
    EmptyBody,
    Request,
    Response,
    ResponseWriter,
)
from gateway.http.headers import error_response
from gateway.http.message import Headers
from gateway.http.rescue import Close, Reset, rescue
from gateway.observe.record import ExchangeRecord
from gateway.routes.forward import Mirrors, RouteRules
from gateway.routes.imported import RouteDecoder, choose_routes
from gateway.routes.owned import route_text
from gateway.routes.table import RouteTable, compile_route
from overlay.h2.stream import H2Stream
from tests.gateway.router.router_kit import (
    API,
    BytesBody,
    Collect,
    StandInCluster,
    ctx,
    get,
    http_echo_backend,
    make_router,
    peer,
    peer_echo,
    serving,
)
from tests.gateway.routes.routes_kit import draws, rules

SHADOW = ServiceName("shadow", "default")
CANARY = """
[[routes]]
address = "api.default"
match = { path = { prefix = "/v1/" } }
rewrite_prefix = "/v2/"
backends = [{ service = "api.default", site = "a", weight = 90 },
            { service = "api.default", site = "b", weight = 10 }]
request_headers = { add = { "x-route" = "canary" }, remove = ["x-debug"] }
response_headers = { add = { "x-served-by" = "route" }, remove = ["content-type"] }
"""


def _header(doc: dict[str, object], name: str) -> list[str]:
    return [v for n, v in doc["headers"] if n == name]  # type: ignore[attr-defined]


async def test_a_canary_split_reaches_both_sites_with_every_action() -> None:
    async with serving(http_echo_backend) as port, peer(peer_echo("b")) as link:
        router = make_router(
            {API: ("a", "b")}, cluster=StandInCluster(http={API: port}), links={"b": link}
        )
        router.rules = rules(CANARY, draw=draws([0.0, 0.899, 0.9, 0.999]))
        seen = []
        for _ in range(4):
            out = Collect()
            request = get(
                b"api.default.isthmus", b"/v1/items?x=1", ((b"x-debug", b"1"), (b"x-app", b"7"))
            )
            await router.forward(request, BytesBody(), out, ctx())
            assert out.response is not None and out.response.status == 200
            headers = dict(out.response.headers)
            assert headers.get(b"x-served-by") == b"route" and b"content-type" not in headers
            doc = out.json()
            seen.append(doc["site"])
            assert doc["path"] == "/v2/items?x=1"
            assert _header(doc, "x-route") == ["canary"] and _header(doc, "x-debug") == []
            assert _header(doc, "x-app") == ["7"]
        assert seen == ["a", "a", "b", "b"]


async def test_without_a_matching_route_nothing_changes() -> None:
    async with serving(http_echo_backend) as port:
        router = make_router({API: ("a",)}, cluster=StandInCluster(http={API: port}))
        router.rules = rules(CANARY, draw=draws([]))  # no draw may happen
        out = Collect()
        request = get(b"api.default.isthmus", b"/other", ((b"x-debug", b"1"),))
        await router.forward(request, BytesBody(), out, ctx())
        doc = out.json()
        assert doc["path"] == "/other" and _header(doc, "x-debug") == ["1"]
        assert _header(doc, "host") == ["api.default.isthmus"]
        assert dict(out.response.headers).get(b"content-type") == b"application/json"  # type: ignore[union-attr]


async def test_a_direct_response_never_reaches_a_backend() -> None:
    cluster = StandInCluster()
    router = make_router({API: ("a",)}, cluster=cluster)
    router.rules = rules(
        '[[routes]]\naddress = "api.default"\n'
        'direct_response = { status = 418, body = "short and stout" }\n'
    )
    out = Collect()
    await router.forward(get(b"api.default.isthmus"), BytesBody(), out, ctx())
    assert out.response is not None and out.response.status == 418
    assert bytes(out.body) == b"short and stout" and out.ended
    assert cluster.bodies == []


@dataclass
class Recorder:
    """An ``unrouted`` forward that records what it was given (and when)."""

    calls: list[tuple[Request, CallContext, float]] = field(default_factory=list)
    gate: trio.Event | None = None

    async def __call__(
        self,
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        rec: ExchangeRecord | None,
    ) -> None:
        self.calls.append((request, ctx, trio.current_time()))
        if self.gate is not None:
            await self.gate.wait()


async def test_rate_limit_answers_429_with_retry_after() -> None:
    now = [0.0]
    limited = rules(
        '[[routes]]\naddress = "api.default"\n'
        'rate_limit = { requests_per_s = 0.5, burst = 2, key = "header", header = "x-tenant" }\n',
        clock=lambda: now[0],
    )
    nxt = Recorder()

    async def call(tenant: bytes) -> None:
        request = get(b"api.default.isthmus", headers=((b"x-tenant", tenant),))
        await limited.forward(request, EmptyBody(), Collect(), ctx(), None, nxt)

    await call(b"t1")
    await call(b"t1")
    with pytest.raises(RateLimited) as info:
        await call(b"t1")
    await call(b"t2")  # another key, another bucket
    assert len(nxt.calls) == 3
    head, _ = error_response(info.value)
    assert head.status == 429 and head.get(b"retry-after") == b"2"
    now[0] = 2.0
    await call(b"t1")  # a token is back
    assert len(nxt.calls) == 4


async def test_fault_delay_and_abort_only_with_the_header(autojump_clock: trio.abc.Clock) -> None:
    faulty = rules(
        '[[routes]]\naddress = "api.default"\n'
        'fault = { percent = 50, delay_ms = 3000, abort_status = 503, header = "x-chaos" }\n',
        draw=draws([0.1, 0.7]),
    )
    nxt = Recorder()
    chaos = ((b"x-chaos", b"1"),)
    start = trio.current_time()
    out = Collect()
    await faulty.forward(
        get(b"api.default.isthmus", headers=chaos), EmptyBody(), out, ctx(), None, nxt
    )
    assert out.response is not None and out.response.status == 503 and nxt.calls == []
    assert trio.current_time() - start == pytest.approx(3.0)
    # Drawn 0.7: above the 50 % share, forwarded at once; no header: never drawn at all.
    for headers in (chaos, ()):
        start = trio.current_time()
        await faulty.forward(
            get(b"api.default.isthmus", headers=headers), EmptyBody(), Collect(), ctx(), None, nxt
        )
        assert trio.current_time() == start
    assert len(nxt.calls) == 2


async def test_fault_reset_resets_the_stream_or_closes_the_connection() -> None:
    faulty = rules(
        '[[routes]]\naddress = "api.default"\nfault = { abort_reset = true }\n', draw=draws([0.0])
    )
    with pytest.raises(ResetInstead) as info:
        await faulty.forward(
            get(b"api.default.isthmus"), EmptyBody(), Collect(), ctx(), None, Recorder()
        )
    assert isinstance(rescue(info.value, head_sent=False, wire="h2"), Reset)
    assert isinstance(rescue(info.value, head_sent=False, wire="h1"), Close)


async def test_route_timeouts_tighten_the_context() -> None:
    timed = rules(
        '[[routes]]\naddress = "api.default"\ntimeouts = { response_head_s = 0.5, idle_s = 7 }\n'
    )
    nxt = Recorder()
    await timed.forward(get(b"api.default.isthmus"), EmptyBody(), Collect(), ctx(10.0), None, nxt)
    ((_, got, at),) = nxt.calls
    assert got.deadline == pytest.approx(at + 0.5) and got.idle_timeout == 7


async def test_mirrors_are_fire_and_forget_and_capped() -> None:
    mirrors = Mirrors()
    mirrored = rules(
        '[[routes]]\naddress = "api.default"\n'
        'mirror = { service = "shadow.default", site = "b", percent = 50, max_in_flight = 1 }\n',
        mirrors=mirrors,
        draw=draws([0.0, 0.0, 0.0, 0.9]),
    )
    nxt = Recorder(gate=trio.Event())
    async with trio.open_nursery() as nursery:
        await nursery.start(mirrors.serve)
        main = Recorder()
        # 1: mirrored (its copy blocks on the gate); the main request is not delayed by it.
        await mirrored.forward(
            get(b"api.default.isthmus"), EmptyBody(), Collect(), ctx(), None, _split(main, nxt)
        )
        await trio.testing.wait_all_tasks_blocked()
        # 2: the one slot is taken: dropped.
        await mirrored.forward(
            get(b"api.default.isthmus"), EmptyBody(), Collect(), ctx(), None, _split(main, nxt)
        )
        # 3: a request with a body whose main request never read it: no truncated copy.
        await mirrored.forward(
            get(b"api.default.isthmus"), BytesBody(b"x"), Collect(), ctx(), None, _split(main, nxt)
        )
        # 4: draw 0.9 is above 50 %: not mirrored.
        await mirrored.forward(
            get(b"api.default.isthmus"), EmptyBody(), Collect(), ctx(), None, _split(main, nxt)
        )
        assert len(main.calls) == 4
        assert [r.authority for r, _, _ in nxt.calls] == [b"shadow.default.b.isthmus"]
        assert (mirrors.started, mirrors.dropped, mirrors.in_flight) == (1, 2, 1)
        assert mirrors.drops["in_flight"] == mirrors.drops["body_unfinished"] == 1
        assert nxt.gate is not None
        nxt.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert mirrors.in_flight == 0
        nursery.cancel_scope.cancel()


def _split(main: Recorder, mirror: Recorder) -> Recorder:
    """One ``unrouted``: the mirror's copies (a discarding writer) to ``mirror``."""

    class Split(Recorder):
        async def __call__(self, request, body, writer, ctx, rec):  # type: ignore[no-untyped-def]
            target = mirror if request.authority.startswith(b"shadow.") else main
            await target(request, body, writer, ctx, rec)

    return Split()


async def test_a_mirror_copy_crosses_a_real_link_and_its_answer_is_discarded() -> None:
    seen: list[bytes] = []
    echo = peer_echo("b")

    async def recording(stream: H2Stream) -> None:
        seen.append(dict(stream.request_headers)[b":authority"])
        await echo(stream)

    mirrors = Mirrors()
    async with serving(http_echo_backend) as port, peer(recording) as link:
        router = make_router(
            {API: ("a", "b"), SHADOW: ("b",)},
            cluster=StandInCluster(http={API: port}),
            links={"b": link},
        )
        router.rules = rules(
            '[[routes]]\naddress = "api.default"\n'
            'mirror = { service = "shadow.default", site = "b" }\n',
            mirrors=mirrors,
            draw=draws([0.0]),
        )
        async with trio.open_nursery() as nursery:
            await nursery.start(mirrors.serve)
            out = Collect()
            await router.forward(get(b"api.default.isthmus", b"/m"), EmptyBody(), out, ctx())
            assert out.json()["site"] == "a"  # the caller's answer: the local endpoint
            with trio.fail_after(10):  # hang guard only
                while mirrors.in_flight or not seen:  # noqa: ASYNC110 (a counter, no event)
                    await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert seen == [b"shadow.default.b.isthmus"]
    assert (mirrors.started, mirrors.failed, mirrors.dropped) == (1, 0, 0)


class WholeCollect(Collect):
    """A writer with the one-write fast path (as the listeners' writers have)."""

    def __init__(self) -> None:
        super().__init__()
        self.whole = 0

    async def send_whole(self, response: Response, body: bytes, trailers: Headers = ()) -> None:
        self.whole += 1
        await self.send_head(response)
        await self.send_data(body)
        await self.send_end(trailers)


async def test_response_edits_keep_the_writers_fast_path() -> None:
    """An HTTP/1.1 endpoint answers a small response in one write when the writer offers
    ``send_whole``; the route's header-editing wrapper must offer it too."""
    edited = rules(
        '[[routes]]\naddress = "api.default"\nresponse_headers = { add = { "x-r" = "1" } }\n'
    )

    async def endpoint(
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        rec: ExchangeRecord | None,
    ) -> None:
        whole = getattr(writer, "send_whole", None)
        assert whole is not None
        await whole(Response(200, ((b"x-e", b"2"),)), b"ok")

    out = WholeCollect()
    await edited.forward(get(b"api.default.isthmus"), EmptyBody(), out, ctx(), None, endpoint)
    assert out.response is not None and out.response.headers == ((b"x-e", b"2"), (b"x-r", b"1"))
    assert out.whole == 1 and bytes(out.body) == b"ok"


async def test_an_owners_route_with_a_backend_pinned_to_the_entry_site_itself_is_followed() -> None:
    """Site b owns api.default and sends 90 % to a -- the entry site -- and 10 % to itself;
    the router at a follows it: the pinned local backend is served here, the other over the
    link."""
    owned = RouteConfig(
        "api.default",
        backends=(Backend("api.default", "a", 90), Backend("api.default", "b", 10)),
    )
    chosen = choose_routes(
        {"b": {API: (route_text(owned, "split"),)}}, frozenset(), {}, RouteDecoder("a", ["b"])
    )
    assert chosen.rejected == ()
    table = RouteTable(
        {
            k: tuple(compile_route(i, r, "isthmus") for i, r in enumerate(v))
            for k, v in chosen.routes.items()
        }
    )
    async with serving(http_echo_backend) as port, peer(peer_echo("b")) as link:
        router = make_router(
            {API: ("a", "b")}, cluster=StandInCluster(http={API: port}), links={"b": link}
        )
        router.rules = RouteRules(
            table, mesh_domain="isthmus", mirrors=Mirrors(), draw=draws([0.0, 0.95])
        )
        seen = []
        for _ in range(2):
            out = Collect()
            await router.forward(get(b"api.default.isthmus", b"/"), BytesBody(), out, ctx())
            assert out.response is not None and out.response.status == 200
            seen.append(out.json()["site"])
        assert seen == ["a", "b"]
