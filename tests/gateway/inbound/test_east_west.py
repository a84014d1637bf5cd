"""EastWestHandler over a real HTTP/2 connection pair on loopback TCP, in front of real
endpoints: what an authenticated peer gateway may and may not do through this site."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import trio

from foundation.errors import H2_CANCEL, H2_CONNECT_ERROR
from gateway.http.overlay_headers import strip_request
from gateway.http.transcode import h2_request_to_h1
from gateway.inbound.request import parse_request
from gateway.upstream.endpoint_h1 import request_head
from overlay.h2.connection import H2Connection
from overlay.h2.stream import H2Stream, StreamReset
from tests.gateway.inbound.inbound_kit import (
    CALLER,
    PEER,
    site,
)


async def until(predicate: Callable[[], bool]) -> None:
    """Poll a condition, bounded in count and time."""
    for _ in range(500):
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("condition not reached in time")


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes
    trailers: list[tuple[bytes, bytes]]


def get(authority: str = "api.default.isthmus", *extra: tuple[str, str]) -> list[tuple[str, str]]:
    return [
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", authority),
        (":path", "/x"),
        *extra,
    ]


async def call(client: H2Connection, headers: list[tuple[str, str]], body: bytes = b"") -> Answer:
    with trio.fail_after(10):
        stream = await client.open_stream(headers, end_stream=not body)
        if body:
            await stream.send_all(body)
            await stream.send_eof()
        raw = await stream.response_headers()
        data = bytearray()
        while chunk := await stream.receive_some():
            data += chunk
        await stream.aclose()
    head = dict(raw)
    return Answer(int(head[b":status"]), head, bytes(data), list(stream.trailers or []))


async def test_allowed_call_reaches_the_endpoint_without_internal_headers() -> None:
    async with site() as s:
        internal = (
            ("isthmus-caller-id", CALLER),
            ("isthmus-caller-site", PEER),
            ("isthmus-deadline-ms", "5000"),
        )
        for authority in ("api.default.isthmus", "api.default.here.isthmus"):
            answer = await call(s.client, get(authority, ("x-app", "1"), *internal))
            assert answer.status == 200
            seen = json.loads(answer.headers[b"x-request-headers"])
            assert ["host", authority] in seen and ["x-app", "1"] in seen
            assert not any(n.startswith("isthmus-") for n, _ in seen)
        post = [*get(), ("content-length", "5")]
        post[0] = (":method", "POST")
        answer = await call(s.client, post, b"hello")
        assert answer.body == b"hello" and (b"x-length", b"5") in answer.trailers


async def test_http2_endpoint_allowed_by_caller_identity() -> None:
    async with site() as s:
        ok = await call(s.client, get("grpc.default.isthmus", ("isthmus-caller-id", CALLER)))
        assert ok.status == 200
        other = "spiffe://peer.example/ns/default/sa/other"
        denied = await call(s.client, get("grpc.default.isthmus", ("isthmus-caller-id", other)))
        assert denied.status == 403


async def test_denied_site_gets_403_with_a_clear_body() -> None:
    async with site() as s:
        # a peer vouches for its own site's callers only, never for another site's
        answer = await call(s.client, get("api.default.isthmus", ("isthmus-caller-site", "evil")))
        assert answer.status == 403
        assert b"'peer-site' may not vouch for callers of 'evil'" in answer.body
        locked = await call(s.client, get("locked.default.isthmus"))
        assert b"'peer-site' may not call locked.default" in locked.body
        assert locked.status == 403
        # a peer cannot claim that its caller is one of ours
        ours = await call(s.client, get("api.default.isthmus", ("isthmus-caller-site", "here")))
        assert ours.status == 403
        assert s.echo["requests"] == 0


@pytest.mark.parametrize(
    ("authority", "status"),
    [
        ("nope.default.isthmus", 404),
        ("api.default.elsewhere.isthmus", 404),
        ("private.default.isthmus", 404),  # exported, but not to this peer
        ("api.default.example.com", 404),
    ],
)
async def test_unknown_or_unavailable_address(authority: str, status: int) -> None:
    async with site() as s:
        answer = await call(s.client, get(authority))
        assert answer.status == status
        assert answer.body.startswith(b"%d " % status)
        assert s.echo["requests"] == 0
        assert (await call(s.client, get())).status == 200  # the link still works


async def test_no_healthy_endpoint_refuses_the_stream_so_the_origin_can_fail_over() -> None:
    """REFUSED_STREAM (RFC 9113 section 8.7) says "no work done": safe to try another site."""
    async with site() as s:
        stream = await s.client.open_stream(get("down.default.isthmus"), end_stream=True)
        with pytest.raises(StreamReset) as info:
            await stream.response_headers()
        assert info.value.refused
        assert s.echo["requests"] == 0
        assert (await call(s.client, get())).status == 200  # the link still works


@pytest.mark.parametrize(
    "headers",
    [
        get("api.default.isthmus", ("isthmus-caller-id", "spiffe://UPPER/x")),
        get("api.default.isthmus", ("isthmus-deadline-ms", "-1")),
        get("api.default.isthmus", ("isthmus-caller-site", "Not A Label")),
        [(":method", "G" * 65), (":scheme", "http"), (":authority", "api.default.isthmus"),
         (":path", "/")],
        [(":method", "GET"), (":scheme", "http"), (":authority", "api.default.isthmus"),
         (":path", "/" + "a" * 20000)],
        [(":method", "GET"), (":scheme", "http"), (":authority", "api.default.isthmus"),
         (":path", "/a b")],
        [(":method", "GET"), (":scheme", "ftp"), (":authority", "api.default.isthmus"),
         (":path", "/")],
        [(":method", "GET"), (":scheme", "http"), (":authority", "api.default.isthmus"),
         (":path", "relative")],
    ],
)  # fmt: skip
async def test_malformed_header_block_is_refused(headers: list[tuple[str, str]]) -> None:
    async with site() as s:
        try:
            answer = await call(s.client, headers)
        except StreamReset:
            pass  # refusing by reset is fine too
        else:
            assert answer.status == 400
        assert s.echo["requests"] == 0
        assert (await call(s.client, get())).status == 200


async def test_endpoint_reset_gives_502() -> None:
    async with site() as s:
        headers = get("grpc.default.isthmus", ("isthmus-caller-id", CALLER))
        headers[3] = (":path", "/reset")
        answer = await call(s.client, headers)
        assert answer.status == 502 and b"reset" in answer.body


async def test_deadline_header_gives_504() -> None:
    async with site() as s:
        slow = get("grpc.default.isthmus", ("isthmus-caller-id", CALLER))
        slow[3] = (":path", "/slow")
        # /slow answers after an hour: the 504 can only come from the 300 ms deadline.  The
        # guard (a wide multiple of it) only turns a hang into a failure.
        with trio.fail_after(30 * 0.3):
            answer = await call(s.client, [*slow, ("isthmus-deadline-ms", "300")])
        assert answer.status == 504


async def test_an_expired_deadline_is_504_before_any_endpoint_is_tried() -> None:
    async with site() as s:
        headers = get("api.default.isthmus", ("isthmus-deadline-ms", "0"))
        answer = await call(s.client, headers)
        assert answer.status == 504
        assert b"deadline had passed; not sent" in answer.body  # not an endpoint's timeout


async def _connect(client: H2Connection, authority: str) -> H2Stream:
    stream = await client.open_stream([(":method", "CONNECT"), (":authority", authority)])
    raw = dict(await stream.response_headers())
    assert raw[b":status"] == b"200"
    return stream


async def test_connect_tunnel_to_tcp_echo_with_half_close() -> None:
    async with site() as s:
        with trio.fail_after(10):
            stream = await _connect(s.client, "db.default.isthmus:5432")
            await stream.send_all(b"hello ")
            await stream.send_all(b"tunnel")
            await stream.send_eof()  # half-close: the echo still answers, then ends
            data = b""
            while chunk := await stream.receive_some():
                data += chunk
            assert data == b"hello tunnel"
            await stream.aclose()
        refused = await call(
            s.client, [(":method", "CONNECT"), (":authority", "nope.default.isthmus:1")]
        )
        assert refused.status == 404


async def test_tcp_reset_resets_the_tunnel() -> None:
    async with site() as s:
        with trio.fail_after(10):
            stream = await _connect(s.client, "reset.default.isthmus:1")
            await stream.send_all(b"0123456789abcdef")
            with pytest.raises(StreamReset) as info:
                while await stream.receive_some():
                    pass
            assert info.value.error_code == H2_CONNECT_ERROR


async def test_stream_reset_resets_the_tcp_connection() -> None:
    async with site() as s:
        with trio.fail_after(10):
            stream = await _connect(s.client, "sink.default.isthmus:9")
            await stream.send_all(b"some bytes")
            stream.reset(H2_CANCEL)
            await until(lambda: len(s.sink) >= 1)
        assert s.sink == ["reset"]
        # and a clean end of the tunnel is a clean close
        with trio.fail_after(10):
            stream = await _connect(s.client, "sink.default.isthmus:9")
            await stream.send_all(b"more")
            await stream.send_eof()
            await until(lambda: len(s.sink) >= 2)
        assert s.sink == ["reset", "eof"]


@pytest.mark.parametrize(
    "block",
    [
        [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"api.default.isthmus"),
         (b":path", b"/x?y=1"), (b"isthmus-caller-site", b"peer-site"), (b"accept", b"*/*"),
         (b"isthmus-deadline-ms", b"5000"), (b"cookie", b"a=1"), (b"cookie", b"b=2")],
        [(b":method", b"POST"), (b":scheme", b"https"),
         (b":authority", b"api.default.isthmus:8443"), (b":path", b"/"),
         (b"content-length", b"5"), (b"te", b"trailers"),
         (b"host", b"api.default.isthmus:8443")],
        [(b":method", b"OPTIONS"), (b":scheme", b"http"), (b":path", b"*"),
         (b"host", b"api.default.isthmus"), (b"isthmus-caller-id", CALLER.encode())],
    ],
)  # fmt: skip
def test_the_destination_validates_a_request_once_with_the_same_result(
    block: list[tuple[bytes, bytes]],
) -> None:
    """The head an HTTP/1.1 endpoint gets is the one parse_request derived (no second pass),
    and it is exactly what deriving it again from the request would give."""
    request = parse_request(block)
    assert request.h1_head is not None
    assert request_head(request) is request.h1_head
    assert request.h1_head == h2_request_to_h1(strip_request(request).h2_headers())
    assert not any(n.startswith(b"isthmus-") for n, _ in request.h1_head.headers)
