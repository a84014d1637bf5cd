"""Router: local and peer routes over real sockets and a real HTTP/2 link; failover; 404/503/504."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio

from foundation.spiffe_id import SpiffeId
from gateway.http.errors import UnknownAddress
from gateway.http.exchange import EmptyBody, Request
from gateway.router.route import NoHealthySite, RouteTimeout
from overlay.h2.connection import H2Connection
from overlay.h2.stream import ConnectionGone, H2Stream, StreamReset
from tests.gateway.router.router_kit import (
    API,
    DB,
    BytesBody,
    Collect,
    StandInCluster,
    ctx,
    get,
    http_echo_backend,
    make_router,
    peer,
    peer_echo,
    refusing,
    serving,
    tcp_echo_backend,
)


def header(doc: dict[str, object], name: str) -> list[str]:
    return [v for n, v in doc["headers"] if n == name]  # type: ignore[attr-defined]


async def test_local_site_is_served_by_the_local_cluster() -> None:
    async with serving(http_echo_backend) as port:
        router = make_router({API: ("a", "b")}, cluster=StandInCluster(http={API: port}))
        out = Collect()
        await router.forward(get(b"api.default.isthmus", b"/hello"), BytesBody(), out, ctx())
    assert out.response is not None and out.response.status == 200
    doc = out.json()
    assert doc["site"] == "a" and doc["path"] == "/hello"
    assert header(doc, "host") == ["api.default.isthmus"]


async def test_a_request_without_body_stays_bodyless_through_the_router() -> None:
    """The router must not hide that a request has no body: a tunnel then sends HEADERS with
    END_STREAM instead of an extra empty DATA frame and a body task per request."""
    async with serving(http_echo_backend) as port:
        cluster = StandInCluster(http={API: port})
        router = make_router({API: ("a",)}, cluster=cluster)
        out = Collect()
        await router.forward(get(b"api.default.isthmus"), EmptyBody(), out, ctx())
    assert out.response is not None and out.response.status == 200
    assert [type(b) for b in cluster.bodies] == [EmptyBody]


async def test_peer_site_is_reached_through_a_real_http2_tunnel() -> None:
    caller = SpiffeId.parse("spiffe://a.test/ns/default/sa/web")
    async with peer(peer_echo("b")) as link:
        router = make_router({API: ("b",)}, links={"b": link})
        out = Collect()
        request = get(
            b"api.default.isthmus",
            b"/p?q=1",
            ((b"x-app", b"1"), (b"isthmus-caller-id", b"spiffe://evil.test/x")),
        )
        body = BytesBody(b"hello ", b"world", trailers=((b"x-sum", b"42"),))
        await router.forward(request, body, out, ctx(caller_id=caller))
    assert out.response is not None and out.response.status == 200
    doc = out.json()
    assert doc["site"] == "b" and doc["path"] == "/p?q=1" and doc["body"] == "hello world"
    assert header(doc, ":authority") == ["api.default.isthmus"]
    assert header(doc, "x-app") == ["1"]
    # The gateway's own overlay headers, never the caller's forged one.
    assert header(doc, "isthmus-caller-id") == [str(caller)]
    assert header(doc, "isthmus-caller-site") == ["a"]
    (remaining,) = header(doc, "isthmus-deadline-ms")
    assert 3000 < int(remaining) <= 5000  # the router caps the 10 s at its 5 s route timeout
    assert out.trailers == ((b"x-got-trailers", b"yes"),)


async def test_anonymous_caller_sends_no_caller_id() -> None:
    async with peer(peer_echo("b")) as link:
        router = make_router({API: ("b",)}, links={"b": link})
        out = Collect()
        await router.forward(
            get(b"api.default.isthmus", headers=((b"isthmus-caller-site", b"zz"),)),
            BytesBody(),
            out,
            ctx(),
        )
    doc = out.json()
    assert header(doc, "isthmus-caller-id") == []
    assert header(doc, "isthmus-caller-site") == ["a"]


async def test_failover_when_first_link_is_down_closed_or_refusing() -> None:
    async with (
        peer(refusing) as refuser,
        peer(peer_echo("closed")) as closed,
        peer(peer_echo("d")) as good,
    ):
        await closed.aclose()
        links = {"b": None, "c": closed, "r": refuser, "d": good}
        router = make_router({API: ("b", "c", "r", "d")}, links=links)
        out = Collect()
        await router.forward(get(b"api.default.isthmus"), BytesBody(), out, ctx())
        assert out.json()["site"] == "d"


async def test_failover_from_local_without_endpoint_to_peer() -> None:
    cluster = StandInCluster(http={})  # local listed but nothing healthy when we get there
    async with peer(peer_echo("b")) as link:
        router = make_router({API: ("a", "b")}, cluster=cluster, links={"b": link})
        out = Collect()
        await router.forward(get(b"api.default.isthmus"), BytesBody(), out, ctx())
    assert out.json()["site"] == "b"


async def test_no_failover_once_the_body_was_consumed() -> None:
    async def eats_body_then_refuses(stream: H2Stream) -> None:
        await stream.receive_some()
        stream.reset(0x7)  # REFUSED_STREAM, but it already took part of the body

    async with peer(eats_body_then_refuses) as eater, peer(peer_echo("c")) as good:
        router = make_router({API: ("b", "c")}, links={"b": eater, "c": good})
        out = Collect()
        body = BytesBody(b"x" * 1000, b"y" * 1000)
        with pytest.raises(StreamReset):
            await router.forward(get(b"api.default.isthmus"), body, out, ctx())
        assert out.response is None


async def test_pinned_address_goes_only_to_its_site() -> None:
    async with peer(peer_echo("b")) as b, peer(peer_echo("c")) as c:
        router = make_router({API: ("b", "c")}, links={"b": b, "c": c})
        out = Collect()
        await router.forward(get(b"api.default.c.isthmus"), BytesBody(), out, ctx())
        assert out.json()["site"] == "c"
        # Pinned to a site whose link is down: 503, never another site.
        router = make_router({API: ("b", "c")}, links={"b": b, "c": None})
        with pytest.raises(NoHealthySite, match="c: link down"):
            await router.forward(get(b"api.default.c.isthmus"), BytesBody(), Collect(), ctx())


@pytest.mark.parametrize(
    "authority",
    [b"example.com", b"api.default.other", b"a.b.c.d.isthmus", b"nope.default.isthmus"],
)
async def test_unknown_address_is_404_naming_it(authority: bytes) -> None:
    router = make_router({API: ("a",)}, known=lambda s: s == API)
    with pytest.raises(UnknownAddress) as info:
        await router.forward(get(authority), BytesBody(), Collect(), ctx())
    assert info.value.http_status == 404
    assert authority.split(b".")[0].decode() in str(info.value)


async def test_an_unknown_site_is_404_and_a_configured_peer_that_is_down_503() -> None:
    """``api.default.no-such-site.isthmus`` names a site that is neither this one nor a peer:
    no peer could ever serve it (404, naming the site), while a configured peer whose link is
    down is a passing condition (503).  Both for requests and for L4 tunnels."""
    router = make_router(
        {API: ("a", "b")}, links={"b": None}, known=lambda s: s == API, peer_sites=("b",)
    )
    with pytest.raises(UnknownAddress, match=r"no-such-site.*unknown site") as info:
        await router.forward(
            get(b"api.default.no-such-site.isthmus"), BytesBody(), Collect(), ctx()
        )
    assert info.value.http_status == 404
    with pytest.raises(UnknownAddress):
        await router.open_l4(b"api.default.no-such-site.isthmus:443", ctx())
    with pytest.raises(NoHealthySite) as down:
        await router.forward(get(b"api.default.b.isthmus"), BytesBody(), Collect(), ctx())
    assert down.value.http_status == 503


async def test_known_service_without_healthy_site_is_503() -> None:
    router = make_router({}, known=lambda s: s == API)
    with pytest.raises(NoHealthySite) as info:
        await router.forward(get(b"api.default.isthmus"), BytesBody(), Collect(), ctx())
    assert info.value.http_status == 503


async def test_every_site_failing_is_503_naming_each() -> None:
    async with peer(refusing) as refuser:
        router = make_router({API: ("b", "c")}, links={"b": None, "c": refuser})
        with pytest.raises(NoHealthySite, match=r"b: link down; c: StreamReset"):
            await router.forward(get(b"api.default.isthmus"), BytesBody(), Collect(), ctx())


async def test_route_timeout_is_504() -> None:
    async def stalls(stream: H2Stream) -> None:
        await trio.sleep_forever()

    async with peer(stalls) as link:
        router = make_router({API: ("b",)}, links={"b": link})
        with trio.fail_after(5), pytest.raises(RouteTimeout) as info:
            await router.forward(get(b"api.default.isthmus"), BytesBody(), Collect(), ctx(0.3))
        assert info.value.http_status == 504
        # The abandoned tunnel was reset: the link has no stream left open.
        for _ in range(100):
            if link.statistics().open_streams == 0:
                break
            await trio.sleep(0.01)
        assert link.statistics().open_streams == 0


async def test_open_l4_through_peer_connect_with_half_close() -> None:
    async with peer(peer_echo("b")) as link:
        router = make_router({DB: ("b",)}, links={"b": link})
        tunnel = await router.open_l4(b"db.default.isthmus:5432", ctx())
        await tunnel.send_all(b"ping")
        await tunnel.send_eof()
        got = b""
        with trio.fail_after(5):
            while piece := await tunnel.receive_some():
                got += piece
        assert got == b"ping"
        assert dict(tunnel.request_headers)[b":authority"] == b"db.default.isthmus:5432"  # type: ignore[attr-defined]
        await tunnel.aclose()


async def test_open_l4_local_then_failover_to_peer() -> None:
    async with serving(tcp_echo_backend) as port, peer(peer_echo("b")) as link:
        cluster = StandInCluster(tcp={DB: port})
        router = make_router({DB: ("a", "b")}, cluster=cluster, links={"b": link})
        local = await router.open_l4(b"db.default.isthmus", ctx())
        assert isinstance(local, trio.SocketStream)
        await local.aclose()
        cluster.tcp.clear()  # local endpoint gone: the peer takes the flow
        remote = await router.open_l4(b"db.default.isthmus", ctx())
        assert dict(remote.request_headers)[b":authority"] == b"db.default.isthmus:443"  # type: ignore[attr-defined]
        await remote.aclose()


async def test_known_services_from_catalog_and_imports_decides_404_or_503() -> None:
    import immutables

    from discovery.snapshot import Catalog
    from discovery.watch import Watch
    from gateway.router.route import known_services
    from overlay.federation.import_ import ImportTable, PeerImports

    imported = PeerImports(
        site="b",
        epoch="e1",
        version=1,
        services=immutables.Map({API: object()}),  # type: ignore[dict-item]
        confirmed_at=0.0,
        stale_since=0.0,  # a stale import still names a known service
    )
    imports = Watch(ImportTable(grace=60.0, peers=immutables.Map({"b": imported})))
    known = known_services(Watch(Catalog()), imports)
    router = make_router({}, known=known)
    with pytest.raises(NoHealthySite):
        await router.forward(get(b"api.default.isthmus"), BytesBody(), Collect(), ctx())
    with pytest.raises(UnknownAddress):
        await router.forward(get(b"db.default.isthmus"), BytesBody(), Collect(), ctx())


async def test_router_route_timeout_caps_a_later_caller_deadline() -> None:
    async with peer(peer_echo("b")) as link:
        router = make_router({API: ("b",)}, links={"b": link}, route_timeout=2.0)
        out = Collect()
        await router.forward(get(b"api.default.isthmus"), BytesBody(), out, ctx(deadline_in=60))
    (remaining,) = header(out.json(), "isthmus-deadline-ms")
    assert 1000 < int(remaining) <= 2000


@asynccontextmanager
async def dying_peer() -> AsyncIterator[H2Connection]:
    """A peer whose TCP connection dies as soon as it has received a request."""
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    a = await trio.open_tcp_stream("127.0.0.1", listeners[0].socket.getsockname()[1])
    b = await listeners[0].accept()
    await listeners[0].aclose()

    async def dies(stream: H2Stream) -> None:
        b.socket.close()  # the peer took the request, then its process died
        await trio.sleep_forever()

    client = H2Connection(a, client_side=True, ping_interval=None)
    server = H2Connection(b, client_side=False, handler=dies, ping_interval=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        yield client
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("method", "fails_over"), [(b"GET", True), (b"POST", False)])
async def test_link_dying_after_the_request_fails_over_only_idempotent(
    method: bytes, fails_over: bool
) -> None:
    async with dying_peer() as dying, peer(peer_echo("c")) as good:
        router = make_router({API: ("b", "c")}, links={"b": dying, "c": good})
        request = Request(method, b"http", b"api.default.isthmus", b"/", ())
        out = Collect()
        with trio.fail_after(5):
            if fails_over:
                await router.forward(request, EmptyBody(), out, ctx())
                assert out.json()["site"] == "c"
            else:
                with pytest.raises(ConnectionGone):
                    await router.forward(request, EmptyBody(), out, ctx())
                assert out.response is None


async def test_link_already_gone_fails_over_for_any_method() -> None:
    async with peer(peer_echo("b")) as closed, peer(peer_echo("c")) as good:
        await closed.aclose()
        router = make_router({API: ("b", "c")}, links={"b": closed, "c": good})
        out = Collect()
        post = Request(b"POST", b"http", b"api.default.isthmus", b"/", ())
        await router.forward(post, EmptyBody(), out, ctx())
        assert out.json()["site"] == "c"
