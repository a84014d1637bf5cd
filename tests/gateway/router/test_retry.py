"""Retries, budgets, breakers and per-try timeouts around the walk over sites
(gateway/router/retry.py), on scripted clusters under the autojump clock."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import trio

from discovery.model import ServiceName
from gateway.cluster.breaker import BreakerOpen
from gateway.cluster.local import NoHealthyEndpoint
from gateway.config.model import ServiceTrafficConfig
from gateway.config.resilience import BreakerConfig, RetryBudgetConfig, RetryConfig
from gateway.http.exchange import Body, CallContext, EmptyBody, Request, Response, ResponseWriter
from gateway.observe.record import ExchangeRecord
from gateway.router.retry import Resilience, resilience_resolver
from gateway.router.route import NoHealthySite, did_no_work
from gateway.upstream.pool import EndpointConnectFailed
from overlay.h2.stream import StreamReset
from tests.gateway.router.router_kit import API, BytesBody, Collect, get

Step = int | str  # a status to answer, or "connect" / "refused" / "reset" / "hang"


@dataclass
class Scripted:
    """A site's cluster that plays ``script`` (the last step repeats) and keeps what it got."""

    site: str
    script: list[Step]
    calls: list[tuple[bytes, bytes]] = field(default_factory=list)  # (method, body read)
    deadlines: list[float] = field(default_factory=list)

    async def forward(
        self,
        request: Request,
        body: Body,
        writer: ResponseWriter,
        ctx: CallContext,
        *,
        service: ServiceName,
    ) -> None:
        step = self.script.pop(0) if len(self.script) > 1 else self.script[0]
        self.deadlines.append(ctx.deadline - trio.current_time())
        await trio.lowlevel.checkpoint()
        if step in ("connect", "refused"):  # nothing of the request went anywhere
            self.calls.append((request.method, b""))
            if step == "connect":
                raise EndpointConnectFailed(f"{self.site}: connection refused")
            raise StreamReset(0x7, remote=True)
        got = bytearray()
        while piece := await body.receive_some(7):
            got += piece
        self.calls.append((request.method, bytes(got)))
        if step == "reset":
            raise StreamReset(0x2, remote=True)
        if step == "hang":
            await trio.sleep_forever()
        assert isinstance(step, int)
        await writer.send_head(Response(step, ()))
        await writer.send_data(f"{self.site}:{step}".encode())
        await writer.send_end()


def resilience(**retry: object) -> Resilience:
    budget = retry.pop("budget", RetryBudgetConfig(ratio=0.2, min_per_s=10.0))
    breakers = retry.pop("breakers", BreakerConfig())
    rule = ServiceTrafficConfig(
        retries=RetryConfig(budget=budget, **retry),  # type: ignore[arg-type]
        breakers=breakers,  # type: ignore[arg-type]
    )
    return Resilience(resilience_resolver([rule]), rng=random.Random(7))


async def run(
    res: Resilience,
    clusters: dict[str, Scripted],
    request: Request | None = None,
    body: Body | None = None,
    *,
    deadline_in: float = 10.0,
    rec: ExchangeRecord | None = None,
) -> Collect:
    out = Collect()
    request = request or get(b"api.default.isthmus")
    idempotent = request.method in {b"GET", b"PUT"}
    await res.forward(
        service=API,
        sites=tuple(clusters),
        cluster_for=lambda site: clusters[site],
        request=request,
        body=body if body is not None else EmptyBody(),
        writer=out,
        ctx=CallContext("a", None, trio.current_time() + deadline_in),
        did_no_work=lambda exc: did_no_work(exc, idempotent=idempotent),
        what="api.default.isthmus",
        exhausted=NoHealthySite,
        rec=rec,
    )
    return out


def post(body: bool = True) -> Request:
    return Request(b"POST", b"http", b"api.default.isthmus", b"/", ())


def record() -> ExchangeRecord:
    return ExchangeRecord("origin", "http", "", 0.0, 0.0, "GET", "", "/", "a", None)


async def test_a_5xx_head_is_held_back_and_retried(autojump_clock: trio.abc.Clock) -> None:
    a = Scripted("a", [503, 200])
    rec = record()
    out = await run(resilience(on=("5xx",)), {"a": a}, rec=rec)
    assert out.response is not None and out.response.status == 200
    assert bytes(out.body) == b"a:200"  # the 503's body never reached the caller
    assert len(a.calls) == 2 and rec.retries == 1


async def test_without_a_matching_condition_the_5xx_stands(autojump_clock: trio.abc.Clock) -> None:
    a = Scripted("a", [503, 200])
    out = await run(resilience(), {"a": a})  # the defaults: connect-failure, refused-stream
    assert out.response is not None and out.response.status == 503
    assert bytes(out.body) == b"a:503" and len(a.calls) == 1


async def test_listed_status_codes_and_gateway_errors(autojump_clock: trio.abc.Clock) -> None:
    a = Scripted("a", [429, 200])
    res = resilience(on=("retriable-status-codes",), retriable_status_codes=(429,))
    assert (await run(res, {"a": a})).response == Response(200, ())
    b = Scripted("b", [500, 200])
    out = await run(resilience(on=("gateway-error",)), {"b": b})
    assert out.response is not None and out.response.status == 500  # 500 is no gateway error


async def test_max_retries_then_the_last_answer_goes_out(autojump_clock: trio.abc.Clock) -> None:
    a = Scripted("a", [503])
    out = await run(resilience(on=("5xx",), max_retries=3), {"a": a})
    assert out.response is not None and out.response.status == 503
    assert bytes(out.body) == b"a:503" and len(a.calls) == 4


async def test_a_get_moves_to_the_next_site_a_post_stays(autojump_clock: trio.abc.Clock) -> None:
    a, b = Scripted("a", [503]), Scripted("b", [200])
    out = await run(resilience(on=("5xx",), max_retries=1), {"a": a, "b": b})
    assert bytes(out.body) == b"b:200" and len(a.calls) == 1 and len(b.calls) == 1

    a, b = Scripted("a", [503]), Scripted("b", [200])
    body = BytesBody(b"hello ", b"world")
    out = await run(resilience(on=("5xx",), max_retries=1), {"a": a, "b": b}, post(), body)
    assert bytes(out.body) == b"a:503"
    assert a.calls == [(b"POST", b"hello world")] * 2  # retried in its site, body replayed
    assert b.calls == []


async def test_a_body_over_the_bound_is_not_retried(autojump_clock: trio.abc.Clock) -> None:
    a = Scripted("a", [503, 200])
    body = BytesBody(b"x" * 100, b"y" * 100)
    out = await run(resilience(on=("5xx",), max_body_bytes=150), {"a": a}, post(), body)
    assert out.response is not None and out.response.status == 503 and len(a.calls) == 1


async def test_failover_still_needs_no_retry(autojump_clock: trio.abc.Clock) -> None:
    """A site that did no work hands over to the next without spending the budget."""
    a, b = Scripted("a", ["connect"]), Scripted("b", [200])
    rec = record()
    out = await run(resilience(max_retries=0), {"a": a, "b": b}, post(), BytesBody(b"x"), rec=rec)
    assert bytes(out.body) == b"b:200" and rec.retries == 0 and len(rec.tried) == 1


async def test_connect_failures_everywhere_are_retried_then_503(
    autojump_clock: trio.abc.Clock,
) -> None:
    a, b = Scripted("a", ["connect"]), Scripted("b", ["refused"])
    rec = record()
    with pytest.raises(NoHealthySite, match="every site failed"):
        await run(resilience(max_retries=2), {"a": a, "b": b}, rec=rec)
    assert rec.retries == 2 and len(a.calls) + len(b.calls) == 6


async def test_no_healthy_endpoint_is_not_retried(autojump_clock: trio.abc.Clock) -> None:
    class Empty(Scripted):
        async def forward(self, *args: object, **kwargs: object) -> None:
            self.calls.append((b"", b""))
            raise NoHealthyEndpoint("none")

    a = Empty("a", [200])
    with pytest.raises(NoHealthySite):
        await run(resilience(on=("5xx",)), {"a": a})
    assert len(a.calls) == 1


async def test_a_reset_is_retried_only_when_asked(autojump_clock: trio.abc.Clock) -> None:
    a = Scripted("a", ["reset", 200])
    with pytest.raises(StreamReset):
        await run(resilience(), {"a": a})
    a = Scripted("a", ["reset", 200])
    assert (await run(resilience(on=("reset",)), {"a": a})).response == Response(200, ())


async def test_the_budget_caps_retries_of_a_failing_service(
    autojump_clock: trio.abc.Clock,
) -> None:
    res = resilience(on=("5xx",), max_retries=3, budget=RetryBudgetConfig(0.2, 0.0, 10.0))
    a = Scripted("a", [503])
    denied = 0
    for _ in range(100):
        rec = record()
        await run(res, {"a": a}, rec=rec)
        denied += rec.retry_denied == "budget"
    assert len(a.calls) <= 120 and len(a.calls) >= 119  # offered 100
    assert denied >= 80


async def test_backoff_is_jittered_and_bounded(autojump_clock: trio.abc.Clock) -> None:
    a = Scripted("a", [503])
    start = trio.current_time()
    await run(
        resilience(on=("5xx",), max_retries=4, backoff_base_s=0.1, backoff_max_s=0.3), {"a": a}
    )
    waited = trio.current_time() - start
    assert 0 < waited <= 0.1 + 0.2 + 0.3 + 0.3


async def test_per_try_timeout_retries_a_hung_attempt(autojump_clock: trio.abc.Clock) -> None:
    a = Scripted("a", ["hang", 200])
    res = resilience(on=("reset",), per_try_timeout_s=1.0)
    out = await run(res, {"a": a}, deadline_in=10.0)
    assert out.response == Response(200, ())
    assert a.deadlines[0] == pytest.approx(1.0)  # the attempt was told its own bound


async def test_a_full_breaker_is_an_immediate_503_naming_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    res = resilience(breakers=BreakerConfig(max_requests=1))
    a = Scripted("a", ["hang"])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, res, {"a": a})
        await trio.sleep(0.1)
        rec = record()
        with pytest.raises(BreakerOpen, match=r"max_requests of api\.default in site a") as info:
            await run(res, {"a": a}, rec=rec)
        assert info.value.http_status == 503 and rec.breaker == "max_requests"
        assert len(a.calls) == 1  # only the hung one reached the site
        nursery.cancel_scope.cancel()
    assert res.breakers.in_flight(API, "a").requests == 0  # released on the way out


async def test_pending_requests_are_released_at_the_head(autojump_clock: trio.abc.Clock) -> None:
    gate = trio.Event()

    @dataclass
    class Streaming(Scripted):
        async def forward(
            self,
            request: Request,
            body: Body,
            writer: ResponseWriter,
            ctx: CallContext,
            *,
            service: ServiceName,
        ) -> None:
            await writer.send_head(Response(200, ()))
            await gate.wait()
            await writer.send_end()

    res = resilience(breakers=BreakerConfig(max_pending_requests=1))
    s = Streaming("a", [200])
    async with trio.open_nursery() as nursery:
        nursery.start_soon(run, res, {"a": s})
        await trio.sleep(0.1)
        counts = res.breakers.in_flight(API, "a")
        assert counts.requests == 1 and counts.pending_requests == 0
        nursery.start_soon(run, res, {"a": s})  # a second one fits: the first has its head
        await trio.sleep(0.1)
        assert res.breakers.in_flight(API, "a").requests == 2
        gate.set()


async def test_a_full_retries_breaker_stops_only_the_retry(
    autojump_clock: trio.abc.Clock,
) -> None:
    res = resilience(on=("5xx",), breakers=BreakerConfig(max_retries=0))
    a = Scripted("a", [503, 200])
    rec = record()
    out = await run(res, {"a": a}, rec=rec)
    assert out.response is not None and out.response.status == 503
    assert rec.retry_denied == "breaker" and len(a.calls) == 1


def test_rules_pick_the_first_matching_service_traffic_rule() -> None:
    other = ServiceTrafficConfig(service="db", retries=RetryConfig(max_retries=5))
    api = ServiceTrafficConfig(service="api", retries=RetryConfig(max_retries=1))
    resolve: Callable[[ServiceName], object] = resilience_resolver([other, api])
    assert resolve(API).rules.max_retries == 1  # type: ignore[attr-defined]
    assert resolve(ServiceName("x", "default")).rules.max_retries == 2  # type: ignore[attr-defined]
