"""WebSocket handshake rules (pure), the extended CONNECT on a real link, and the Upgrade to a
real HTTP/1.1 endpoint on loopback (gateway.http.websocket, gateway.cluster.peer,
gateway.cluster.local)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest
import trio

from foundation.errors import H2_CONNECT_ERROR, H2_NO_ERROR
from gateway.cluster.local import LocalCluster, UpstreamTimeout
from gateway.cluster.peer import NoExtendedConnect, open_websocket_tunnel
from gateway.config.model import PolicyConfig
from gateway.http.errors import BadRequest, MalformedHeaders, UpstreamProtocolError
from gateway.http.exchange import CallContext, Request, Response
from gateway.http.h1_server import H1ServerConnection
from gateway.http.message import RequestHead, ResponseHead
from gateway.http.websocket import (
    UpgradeNotSupported,
    accept_value,
    check_switch,
    encode_switch,
    h1_upgrade_head,
    requested_upgrade,
    websocket_request,
    websocket_request_from_h2,
)
from gateway.inbound.east_west import EastWestHandler
from gateway.listener.h1 import request_from_h1
from gateway.upstream.pool import UpstreamPool
from overlay.federation.config import ExportConfig
from overlay.h2.limits import H2Limits
from overlay.h2.stream import H2Stream, StreamReset
from tests.gateway.inbound.inbound_kit import CALLER, site
from tests.gateway.router.router_kit import Collect, peer
from tests.gateway.upstream.upstream_kit import SVC, RecordingWriter, endpoint, watch_of

KEY = b"dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455 section 1.3's example
ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
HANDSHAKE = (
    (b"host", b"chat.default.isthmus"),
    (b"connection", b"Upgrade"),
    (b"upgrade", b"websocket"),
    (b"sec-websocket-key", KEY),
    (b"sec-websocket-version", b"13"),
    (b"sec-websocket-protocol", b"chat, superchat"),
    (b"origin", b"http://example.com"),
)


def head(
    *fields: tuple[bytes, bytes], method: bytes = b"GET", version: bytes = b"1.1"
) -> RequestHead:
    return RequestHead(method=method, target=b"/chat?x=1", http_version=version, headers=fields)


def replaced(name: bytes, value: bytes | None) -> tuple[tuple[bytes, bytes], ...]:
    out = tuple((n, v) for n, v in HANDSHAKE if n != name)
    return out if value is None else (*out, (name, value))


# -- the caller's handshake ---------------------------------------------------------------------


def test_no_upgrade_field_is_an_ordinary_request() -> None:
    assert requested_upgrade(head((b"host", b"a"), (b"connection", b"keep-alive"))) is None


def test_a_websocket_handshake_is_recognised() -> None:
    assert requested_upgrade(head(*HANDSHAKE)) == b"websocket"
    assert requested_upgrade(head(*replaced(b"upgrade", b"WebSocket"))) == b"websocket"


@pytest.mark.parametrize("value", [b"h2c", b"foo", b"websocket, h2c", b"TLS/1.0", b"HTTP/2.0"])
def test_any_other_upgrade_is_501(value: bytes) -> None:
    with pytest.raises(UpgradeNotSupported) as info:
        requested_upgrade(head(*replaced(b"upgrade", value)))
    assert info.value.http_status == 501


@pytest.mark.parametrize(
    ("fields", "method", "version"),
    [
        (HANDSHAKE, b"POST", b"1.1"),
        (HANDSHAKE, b"GET", b"1.0"),
        (replaced(b"connection", b"keep-alive"), b"GET", b"1.1"),
        (replaced(b"sec-websocket-key", None), b"GET", b"1.1"),
        (replaced(b"sec-websocket-key", b"c2hvcnQ="), b"GET", b"1.1"),  # 5 bytes, not 16
        (replaced(b"sec-websocket-key", b"not base64!!"), b"GET", b"1.1"),
        (replaced(b"sec-websocket-version", None), b"GET", b"1.1"),
        ((*HANDSHAKE, (b"content-length", b"5")), b"GET", b"1.1"),
        ((*HANDSHAKE, (b"transfer-encoding", b"chunked")), b"GET", b"1.1"),
    ],
)
def test_a_broken_websocket_handshake_is_400(
    fields: tuple[tuple[bytes, bytes], ...], method: bytes, version: bytes
) -> None:
    with pytest.raises(BadRequest) as info:
        requested_upgrade(head(*fields, method=method, version=version))
    assert info.value.http_status == 400


def test_accept_value_is_rfc_6455s() -> None:
    assert accept_value(KEY) == ACCEPT


def caller_request() -> Request:
    return websocket_request(request_from_h1(head(*HANDSHAKE), scheme=b"http"))


def test_the_caller_request_is_an_extended_connect_with_the_handshake_fields() -> None:
    request = caller_request()
    assert request.is_websocket and not request.is_connect
    block = request.h2_headers()
    assert block[:5] == (
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"http"),
        (b":authority", b"chat.default.isthmus"),
        (b":path", b"/chat?x=1"),
    )
    names = [n for n, _ in block[5:]]
    assert names == [
        b"sec-websocket-key",
        b"sec-websocket-version",
        b"sec-websocket-protocol",
        b"origin",
    ]


# -- the destination's side ---------------------------------------------------------------------


def test_a_peer_block_round_trips_to_the_endpoint_handshake() -> None:
    block = (*caller_request().h2_headers(), (b"isthmus-caller-site", b"east"))
    request = websocket_request_from_h2(block)
    assert request.is_websocket and request.authority == b"chat.default.isthmus"
    assert all(not n.startswith(b"isthmus-") for n, _ in request.headers)
    upgrade = h1_upgrade_head(request)
    assert (upgrade.method, upgrade.target) == (b"GET", b"/chat?x=1")
    assert upgrade.headers[0] == (b"host", b"chat.default.isthmus")
    assert (b"sec-websocket-key", KEY) in upgrade.headers
    assert not [n for n, _ in upgrade.headers if n.startswith(b"isthmus-")]


def _block(**changes: bytes | None) -> list[tuple[bytes, bytes]]:
    out: list[tuple[bytes, bytes]] = []
    for name, value in caller_request().h2_headers():
        key = name.decode().lstrip(":").replace("-", "_")
        if key in changes:
            if changes[key] is not None:
                out.append((name, changes[key]))  # type: ignore[arg-type]
        else:
            out.append((name, value))
    return out


def test_another_protocol_from_a_peer_is_501() -> None:
    with pytest.raises(UpgradeNotSupported):
        websocket_request_from_h2(_block(protocol=b"connect-udp"))


@pytest.mark.parametrize(
    "changes",
    [
        {"method": b"GET"},  # :protocol only on CONNECT
        {"path": None},
        {"scheme": b"ftp"},
        {"authority": b"bad host"},
        {"sec_websocket_key": b"short"},
        {"sec_websocket_version": None},
        {"origin": b"evil\r\nx-injected: 1"},
    ],
)
def test_malformed_extended_connect_is_never_forwarded(changes: dict[str, bytes | None]) -> None:
    with pytest.raises(MalformedHeaders):
        websocket_request_from_h2(_block(**changes))


def test_the_endpoints_101_must_really_switch_for_this_key() -> None:
    good = (
        (b"upgrade", b"websocket"),
        (b"connection", b"Upgrade"),
        (b"sec-websocket-accept", ACCEPT),
    )
    check_switch(ResponseHead(101, good), KEY)
    for bad in (
        ((b"upgrade", b"h2c"), good[1], good[2]),
        (good[0], good[2]),
        (good[0], good[1], (b"sec-websocket-accept", accept_value(b"x" * 24))),
    ):
        with pytest.raises(UpstreamProtocolError):
            check_switch(ResponseHead(101, bad), KEY)


def test_the_callers_101_carries_the_endpoints_fields_and_no_framing() -> None:
    out = encode_switch(((b"sec-websocket-accept", ACCEPT), (b"content-length", b"0")))
    assert out == (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"sec-websocket-accept: " + ACCEPT + b"\r\n\r\n"
    )


# -- across a real HTTP/2 link ------------------------------------------------------------------

LINK = H2Limits(enable_connect_protocol=True)


def ctx(seconds: float = 10.0) -> CallContext:
    return CallContext("a", None, trio.current_time() + seconds)


async def test_extended_connect_crosses_a_link_and_becomes_a_tunnel() -> None:
    seen: list[list[tuple[bytes, bytes]]] = []

    async def switching_peer(stream: H2Stream) -> None:
        seen.append(list(stream.request_headers))
        await stream.send_headers([(b":status", b"200"), (b"sec-websocket-accept", ACCEPT)])
        while data := await stream.receive_some(65536):
            await stream.send_all(data)
        await stream.send_eof()

    async with peer(switching_peer, limits=LINK) as link:
        result = await open_websocket_tunnel(link, caller_request(), ctx(), local_site="a")
        assert result.switched and result.response == Response(
            101, ((b"sec-websocket-accept", ACCEPT),)
        )
        await result.stream.send_all(b"\x81\x05hello")
        assert await receive_exactly(result.stream, 7) == b"\x81\x05hello"
        await result.stream.aclose()
    pseudo = [(n, v) for n, v in seen[0] if n.startswith(b":")]
    assert dict(pseudo) == {
        b":method": b"CONNECT",
        b":protocol": b"websocket",
        b":scheme": b"http",
        b":authority": b"chat.default.isthmus",
        b":path": b"/chat?x=1",
    }
    assert (b"sec-websocket-key", KEY) in seen[0]


async def test_a_peer_without_enable_connect_protocol_gets_no_extended_connect() -> None:
    opened: list[H2Stream] = []

    async def handler(stream: H2Stream) -> None:
        opened.append(stream)

    async with peer(handler) as link:
        with pytest.raises(NoExtendedConnect) as info:
            await open_websocket_tunnel(link, caller_request(), ctx(), local_site="a")
    assert info.value.retry_elsewhere and opened == []


async def test_a_refusal_across_the_link_is_relayed_as_it_is() -> None:
    async def refusing_peer(stream: H2Stream) -> None:
        await stream.send_headers([(b":status", b"426"), (b"sec-websocket-version", b"13")])
        await stream.send_all(b"upgrade required")
        await stream.send_eof()

    async with peer(refusing_peer, limits=LINK) as link:
        result = await open_websocket_tunnel(link, caller_request(), ctx(), local_site="a")
        assert not result.switched and result.response.status == 426
        out = Collect()
        await result.relay_refusal(out)
        await result.stream.aclose()
    assert out.response is not None and out.response.status == 426
    assert bytes(out.body) == b"upgrade required" and out.ended


# -- the Upgrade to a real HTTP/1.1 endpoint ----------------------------------------------------

Answer = Callable[[RequestHead], bytes]


@asynccontextmanager
async def h1_endpoint(answer: Answer | None) -> AsyncIterator[tuple[int, list[RequestHead]]]:
    """An HTTP/1.1 endpoint that records each request head and writes ``answer(head)``
    (None: never answers), then echoes whatever follows."""
    heads: list[RequestHead] = []

    async def serve(stream: trio.SocketStream) -> None:
        conn = H1ServerConnection(stream)
        got = await conn.next_request()
        assert got is not None
        heads.append(got)
        if answer is None:
            await trio.sleep_forever()
        await stream.send_all(answer(got))
        with contextlib.suppress(trio.BrokenResourceError):  # a gateway may end it with RST
            while data := await stream.receive_some(65536):
                await stream.send_all(data)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    async with trio.open_nursery() as nursery:
        nursery.start_soon(trio.serve_listeners, serve, listeners)
        yield listeners[0].socket.getsockname()[1], heads
        nursery.cancel_scope.cancel()


def switching(got: RequestHead) -> bytes:
    key = got.get(b"sec-websocket-key") or b""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_value(key) + b"\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        b"first frame"  # sent with the head: must reach the caller first
    )


@asynccontextmanager
async def cluster_at(port: int, protocol: str = "http1") -> AsyncIterator[LocalCluster]:
    async with trio.open_nursery() as nursery:
        pool = UpstreamPool()
        await nursery.start(pool.serve)
        yield LocalCluster(
            local_site="here",
            catalog=watch_of(endpoint(port, protocol)),
            pool=pool,  # type: ignore[arg-type]
        )
        nursery.cancel_scope.cancel()


async def test_the_endpoint_switches_and_its_first_bytes_come_first() -> None:
    async with h1_endpoint(switching) as (port, heads), cluster_at(port) as cluster:
        result = await cluster.open_websocket(
            websocket_request_from_h2(caller_request().h2_headers()), ctx(), service=SVC
        )
        try:
            assert result.switched
            fields = dict(result.response.headers)
            assert fields[b"sec-websocket-accept"] == ACCEPT
            assert fields[b"sec-websocket-protocol"] == b"chat"
            assert b"upgrade" not in fields and b"connection" not in fields
            assert await receive_exactly(result.stream, 11) == b"first frame"
            await result.stream.send_all(b"echo me")
            assert await receive_exactly(result.stream, 7) == b"echo me"
        finally:
            await result.stream.aclose()
    [sent] = heads
    assert sent.get(b"upgrade") == b"websocket" and sent.get(b"connection") == b"upgrade"
    assert sent.get(b"sec-websocket-key") == KEY and sent.get(b"host") == b"chat.default.isthmus"
    assert sent.get(b"te") is None  # the upgrade's Connection names nothing else


async def test_a_101_with_the_wrong_accept_is_502() -> None:
    def wrong(got: RequestHead) -> bytes:
        return switching(got).replace(ACCEPT, accept_value(b"another key"))

    async with h1_endpoint(wrong) as (port, _), cluster_at(port) as cluster:
        with pytest.raises(UpstreamProtocolError) as info:
            await cluster.open_websocket(
                websocket_request_from_h2(caller_request().h2_headers()), ctx(), service=SVC
            )
    assert info.value.http_status == 502


async def test_an_endpoint_refusal_is_relayed_with_its_body() -> None:
    def refuse(got: RequestHead) -> bytes:
        return b"HTTP/1.1 403 Forbidden\r\nContent-Length: 4\r\nX-Why: policy\r\n\r\nnope"

    async with h1_endpoint(refuse) as (port, _), cluster_at(port) as cluster:
        result = await cluster.open_websocket(
            websocket_request_from_h2(caller_request().h2_headers()), ctx(), service=SVC
        )
        writer = RecordingWriter()
        await result.relay_refusal(writer)
        await result.stream.aclose()
    assert not result.switched and writer.response is not None
    assert writer.response.status == 403 and (b"x-why", b"policy") in writer.response.headers
    assert bytes(writer.body) == b"nope"


async def test_the_handshake_is_bounded_by_the_route_deadline() -> None:
    async with h1_endpoint(None) as (port, heads), cluster_at(port) as cluster:
        with trio.fail_after(5 * 0.5 + 5), pytest.raises(UpstreamTimeout) as info:  # hang guard
            await cluster.open_websocket(
                websocket_request_from_h2(caller_request().h2_headers()), ctx(0.5), service=SVC
            )
    assert info.value.http_status == 504 and len(heads) == 1


async def test_an_http2_endpoint_cannot_take_a_websocket() -> None:
    async with cluster_at(9, "http2") as cluster:
        with pytest.raises(UpgradeNotSupported):
            await cluster.open_websocket(
                websocket_request_from_h2(caller_request().h2_headers()), ctx(), service=SVC
            )


async def test_a_200_without_the_accept_value_is_a_refusal_not_a_switch() -> None:
    async def ignoring_peer(stream: H2Stream) -> None:  # the endpoint just answered the GET
        await stream.send_headers([(b":status", b"200"), (b"content-length", b"2")])
        await stream.send_all(b"ok")
        await stream.send_eof()

    async with peer(ignoring_peer, limits=LINK) as link:
        result = await open_websocket_tunnel(link, caller_request(), ctx(), local_site="a")
        assert not result.switched and result.response.status == 200
        out = Collect()
        await result.relay_refusal(out)
        await result.stream.aclose()
    assert bytes(out.body) == b"ok"


async def test_a_refusal_never_carries_an_accept_value_on() -> None:
    def ignore(got: RequestHead) -> bytes:
        return (
            b"HTTP/1.1 200 OK\r\nSec-WebSocket-Accept: " + ACCEPT + b"\r\nContent-Length: 2\r\n"
            b"\r\nok"
        )

    async with h1_endpoint(ignore) as (port, _), cluster_at(port) as cluster:
        result = await cluster.open_websocket(
            websocket_request_from_h2(caller_request().h2_headers()), ctx(), service=SVC
        )
        writer = RecordingWriter()
        await result.relay_refusal(writer)
        await result.stream.aclose()
    assert not result.switched and writer.response is not None
    assert writer.response.status == 200 and bytes(writer.body) == b"ok"
    assert b"sec-websocket-accept" not in dict(writer.response.headers)
    assert b"sec-websocket-accept" not in dict(result.response.headers)


# -- the destination gateway (EastWestHandler) --------------------------------------------------


def ws_block(authority: str, protocol: str = "websocket") -> list[tuple[str, str]]:
    return [
        (":method", "CONNECT"),
        (":protocol", protocol),
        (":scheme", "http"),
        (":authority", authority),
        (":path", "/chat"),
        ("sec-websocket-key", KEY.decode()),
        ("sec-websocket-version", "13"),
    ]


async def test_the_destination_refuses_unknown_protocols_and_http2_endpoints_with_501() -> None:
    async with site() as s:
        for block in (
            ws_block("api.default.isthmus", "connect-udp"),
            ws_block("grpc.default.isthmus"),  # an HTTP/2 endpoint
        ):
            stream = await s.client.open_stream([*block, ("isthmus-caller-id", CALLER)])
            with trio.fail_after(10):
                answer = dict(await stream.response_headers())
            await stream.aclose()
            assert answer[b":status"] == b"501"
        assert s.echo["requests"] == 0


async def test_the_destination_relays_an_endpoint_that_did_not_switch() -> None:
    async with site() as s:  # api is an HTTP/1.1 echo that answers 200 to anything
        stream = await s.client.open_stream(ws_block("api.default.isthmus"))
        with trio.fail_after(10):
            answer = dict(await stream.response_headers())
            # The destination ends a refusal whole and then stops the request side with
            # RST_STREAM NO_ERROR (RFC 9113 section 8.1); that reset may arrive before or after
            # we read the end, so the body is read to its end and then either EOF or that
            # reset is what a complete refusal looks like.  Nothing is sent: the reset may
            # already have closed our side.
            try:
                while await stream.receive_some():
                    pass
            except StreamReset as exc:
                assert exc.remote and exc.error_code == H2_NO_ERROR
        await stream.aclose()
        assert answer[b":status"] == b"200" and b"sec-websocket-accept" not in answer
        assert s.echo["requests"] == 1


async def receive_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    got = b""
    while len(got) < n:
        piece = await stream.receive_some(n - len(got))
        assert piece, f"stream ended after {got!r}"
        got += piece
    return got


async def test_a_switched_websocket_is_relayed_under_the_tunnel_idle_bound() -> None:
    """After the 101 the destination relays like an L4 tunnel: an idle WebSocket is ended
    (CONNECT_ERROR towards the origin) after the tunnel idle timeout."""
    idle = 1.0  # real time: long enough that a loaded machine does not idle it out early
    async with h1_endpoint(switching) as (port, _), cluster_at(port) as cluster:
        handler = EastWestHandler(
            local_site="here",
            mesh_domain="isthmus",
            cluster=cluster,
            export_rules=(ExportConfig(service=SVC.name),),
            policies=(PolicyConfig(service=SVC.name, allow_sites=("*",)),),
            tunnel_idle_timeout=idle,
        )
        async with peer(lambda stream: handler("there", stream), limits=LINK) as link:
            stream = await link.open_stream(ws_block(f"{SVC.name}.{SVC.namespace}.isthmus"))
            with trio.fail_after(5 * idle + 5):  # hang guard only
                answer = dict(await stream.response_headers())
                assert answer[b":status"] == b"200" and answer[b"sec-websocket-accept"] == ACCEPT
                assert await receive_exactly(stream, len(b"first frame")) == b"first frame"
                await stream.send_all(b"still here")
                assert await receive_exactly(stream, len(b"still here")) == b"still here"
                with pytest.raises(StreamReset) as info:  # then nothing moves
                    await stream.receive_some()
            await stream.aclose()
    assert info.value.error_code == H2_CONNECT_ERROR
