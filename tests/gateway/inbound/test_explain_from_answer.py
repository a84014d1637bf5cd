"""``isthmus explain --from B`` asked at A, over real HTTP/2 links: A -> B -> C.

B is a real east-west handler with a real router and ``run_explain``; C is the inbound kit's
real destination (``here``).  B computes the trace as if the request had entered at B and
asks C only the one-site question (one hop: a ``from-v1`` question is never sent on); a peer
B does not list is refused before anything is asked; every failure is its own typed error.
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import immutables
import pytest
import trio
import trio.testing

from discovery.model import ServiceName
from discovery.watch import Watch
from foundation.spiffe_id import SpiffeId
from gateway.cluster.local import LocalCluster
from gateway.http.exchange import CallContext, Request
from gateway.http.overlay_headers import EXPLAIN_HEADER
from gateway.inbound.east_west import EastWestHandler
from gateway.inbound.explain_from_answer import (
    MAX_QUESTION_HEADERS,
    FromAnswerer,
    question_of,
)
from gateway.router.explain import Trace
from gateway.router.explain_from import (
    FROM_VERSION,
    FromSiteCannot,
    FromSiteRefused,
    FromSiteTimedOut,
    FromSiteUnreachable,
    answer_to_trace,
    ask_from,
)
from gateway.router.explain_run import run_explain
from gateway.router.route import Router
from gateway.upstream.pool import UpstreamPool
from overlay.h2.connection import H2Connection
from overlay.h2.stream import H2Stream
from overlay.peering.route_table import RouteView
from tests.gateway.inbound.inbound_kit import CALLER, PEER, site
from tests.gateway.upstream.upstream_kit import watch_of

B = PEER  # the inbound kit's destination ("here", site C) knows its peer by this name
ASKER = "asker"  # site A


@dataclass
class Recording:
    """B's link to C, recording every header block B sends on it."""

    conn: H2Connection
    sent: list[dict[bytes, bytes]] = field(default_factory=list)

    async def open_stream(self, headers: Any, *, end_stream: bool = False) -> H2Stream:
        self.sent.append({bytes(n): bytes(v) for n, v in headers})
        return await self.conn.open_stream(headers, end_stream=end_stream)

    async def peer_accepts_extended_connect(self) -> bool:
        return False


@dataclass
class Hops:
    a_to_b: H2Connection
    to_c: Recording
    echo: dict[str, int]


def _router(cluster: LocalCluster, to_c: Recording) -> Router:
    view = RouteView(B, immutables.Map({ServiceName(s): ("here",) for s in ("api", "grpc")}))
    return Router(
        local_site=B,
        mesh_domain="isthmus",
        routes=Watch(view),
        outbound=lambda s: to_c if s == "here" else None,
        local=cluster,
        peer_sites=["here", ASKER],
        known=lambda _s: True,
    )


@asynccontextmanager
async def hops(peers: Sequence[str] = (ASKER,), *, answers: bool = True) -> AsyncIterator[Hops]:
    async with site() as c:
        to_c = Recording(c.client)
        cluster = LocalCluster(local_site=B, catalog=watch_of(), pool=UpstreamPool())
        handler = EastWestHandler(
            local_site=B, mesh_domain="isthmus", cluster=cluster, export_rules=(), policies=()
        )
        if answers:  # else: a gateway of before the question
            explainer = functools.partial(run_explain, _router(cluster, to_c), cluster)
            handler.explain_from = FromAnswerer(local_site=B, peers=peers, explainer=explainer)
        async with trio.open_nursery() as nursery:
            a, b = trio.testing.memory_stream_pair()
            client = H2Connection(a, client_side=True, ping_interval=None)
            server = H2Connection(
                b, client_side=False, handler=lambda s: handler(ASKER, s), ping_interval=None
            )
            await nursery.start(client.serve)
            await nursery.start(server.serve)
            yield Hops(client, to_c, c.echo)
            assert server.close_reason is None, "a question must never take the link down"
            nursery.cancel_scope.cancel()


def _request(service: str, *headers: tuple[bytes, bytes]) -> Request:
    fields = ((b"authorization", b"Bearer s3cr3t-0001"), *headers)
    return Request(b"GET", b"http", f"{service}.default.isthmus".encode(), b"/x", fields)


def _ctx(caller_id: str | None = None) -> CallContext:
    sid = None if caller_id is None else SpiffeId.parse(caller_id)
    return CallContext(caller_site=ASKER, caller_id=sid, deadline=trio.current_time() + 30)


async def _ask(h: Hops, service: str, caller_id: str | None = None) -> dict[str, Any]:
    return await ask_from(h.a_to_b, B, _request(service), _ctx(caller_id), local_site=ASKER)


async def test_the_site_asked_computes_its_trace_and_asks_its_destination_one_hop() -> None:
    async with hops() as h:
        before = dict(h.echo)
        trace = await _ask(h, "api")
        assert trace["site"] == "here" and trace["status"] is None
        [cand] = trace["candidates"]
        assert (cand["site"], cand["decision"], cand["link"]) == ("here", "chosen", "up")
        assert cand["policy"] == "allowed" and cand["endpoint"]["address"] == "127.0.0.1"
        # B asked C the one-site question, as B: never the from-question again.
        [question] = h.to_c.sent
        assert question[EXPLAIN_HEADER] == b"v1"
        assert question[b"isthmus-caller-site"] == B.encode()
        assert FROM_VERSION not in question.values()
        assert "s3cr3t" not in repr(trace)
        assert h.echo == before  # nothing reached an endpoint


async def test_the_callers_identity_reaches_the_destinations_policy_through_both_hops() -> None:
    async with hops() as h:
        denied = await _ask(h, "grpc")
        allowed = await _ask(h, "grpc", CALLER)
        assert denied["candidates"][0]["policy"] == "denied" and denied["status"] == 403
        assert allowed["candidates"][0]["policy"] == "allowed" and allowed["status"] is None


async def test_a_peer_the_site_does_not_list_is_refused_and_nothing_is_asked() -> None:
    async with hops(peers=("someone-else",)) as h:
        with pytest.raises(FromSiteRefused, match="explain_peers"):
            await _ask(h, "api")
        assert h.to_c.sent == []
    async with hops(peers=("*",)) as h:
        assert (await _ask(h, "api"))["site"] == "here"


async def test_a_gateway_that_does_not_answer_the_question_says_so() -> None:
    async with hops(answers=False) as h:
        with pytest.raises(FromSiteCannot, match="does not answer 'from-v1' questions"):
            await _ask(h, "api")
        assert h.to_c.sent == []


async def test_a_question_with_too_many_fields_is_refused() -> None:
    many = tuple((b"x-%d" % i, b"v") for i in range(MAX_QUESTION_HEADERS + 1))
    async with hops() as h:
        with pytest.raises(FromSiteCannot, match="at most"):
            await ask_from(h.a_to_b, B, _request("api", *many), _ctx(), local_site=ASKER)
        assert h.to_c.sent == []


async def test_a_site_that_never_answers_times_out(autojump_clock: object) -> None:
    async def never(stream: H2Stream) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        a, b = trio.testing.memory_stream_pair()
        client = H2Connection(a, client_side=True, ping_interval=None)
        server = H2Connection(b, client_side=False, handler=never, ping_interval=None)
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        with pytest.raises(FromSiteTimedOut, match="within 20s"):
            await ask_from(client, B, _request("api"), _ctx(), local_site=ASKER)
        nursery.cancel_scope.cancel()


def _raw() -> list[tuple[bytes, bytes]]:
    return [
        (b":method", b"GET"),
        (b":scheme", b"http"),
        (b":authority", b"api.default.isthmus"),
        (b":path", b"/"),
        (b"isthmus-caller-site", ASKER.encode()),
        (b"isthmus-caller-id", CALLER.encode()),
        (EXPLAIN_HEADER, FROM_VERSION),
    ]


def test_the_question_is_what_a_caller_of_this_site_would_send() -> None:
    request, ctx = question_of(_raw(), peer_site=ASKER, local_site=B, now=100.0, route_timeout=15)
    assert ctx.caller_site == B and str(ctx.caller_id) == CALLER and ctx.deadline == 115.0
    assert request.authority == b"api.default.isthmus"
    assert all(not n.startswith(b"isthmus-") for n, _ in request.headers)


async def test_the_site_answers_a_bounded_number_at_once_each_within_its_budget(
    autojump_clock: object,
) -> None:
    started = trio.Event()

    async def slow(request: Request, ctx: CallContext) -> Trace:
        started.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    answerer = FromAnswerer(local_site=B, peers=(ASKER,), explainer=slow, max_concurrent=1)
    results: list[tuple[int, dict[str, Any]]] = []

    async def ask() -> None:
        results.append(await answerer.answer(ASKER, _raw()))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(ask)
        await started.wait()
        status, doc = await answerer.answer(ASKER, _raw())  # the second, while one runs
        assert status == 503 and "busy" in doc["error"]
    [(status, doc)] = results
    assert status == 503 and "did not finish within 15s" in doc["error"]
    with pytest.raises(FromSiteUnreachable, match="did not finish"):  # as the asker reads it
        answer_to_trace(B, b"503", json.dumps(doc).encode())
