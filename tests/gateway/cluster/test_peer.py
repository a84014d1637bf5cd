"""gateway.cluster.peer over a real HTTP/2 link: headers, body streaming, bad answers."""

from __future__ import annotations

import pytest
import trio

from foundation.errors import UpstreamError
from foundation.spiffe_id import SpiffeId
from gateway.cluster.peer import (
    TunnelRejected,
    forward_over_link,
    open_connect_tunnel,
    tunnel_request_headers,
)
from gateway.http.errors import UpstreamProtocolError
from gateway.http.exchange import CallContext, EmptyBody, Request
from overlay.h2.stream import H2Stream, StreamReset
from tests.gateway.router.router_kit import BytesBody, Collect, get, peer


def test_tunnel_headers_replace_internal_headers_and_carry_the_deadline() -> None:
    request = Request(
        b"POST",
        b"http",
        b"api.default.isthmus",
        b"/x",
        ((b"isthmus-caller-id", b"spiffe://evil.test/x"), (b"x-a", b"1")),
    )
    caller = SpiffeId.parse("spiffe://a.test/web")
    ctx = CallContext("a", caller, deadline=102.5)
    headers = tunnel_request_headers(request, ctx, local_site="a", now=100.0)
    assert headers == (
        (b":method", b"POST"),
        (b":scheme", b"http"),
        (b":authority", b"api.default.isthmus"),
        (b":path", b"/x"),
        (b"x-a", b"1"),
        (b"isthmus-caller-site", b"a"),
        (b"isthmus-deadline-ms", b"2500"),
        (b"isthmus-caller-id", b"spiffe://a.test/web"),
    )
    late = tunnel_request_headers(request, CallContext("a", None, 99.0), local_site="a", now=100)
    assert (b"isthmus-deadline-ms", b"0") in late
    assert not [n for n, _ in late if n == b"isthmus-caller-id"]


def ctx() -> CallContext:
    return CallContext("a", None, trio.current_time() + 10)


async def test_malformed_response_head_is_502_before_anything_reaches_the_caller() -> None:
    async def bad_status(stream: H2Stream) -> None:
        await stream.send_headers([(b":status", b"999")], end_stream=True)

    async with peer(bad_status) as link:
        out = Collect()
        with pytest.raises(UpstreamProtocolError) as info:
            await forward_over_link(
                link, get(b"api.default.isthmus"), EmptyBody(), out, ctx(), local_site="a"
            )
        assert info.value.http_status == 502 and not out.head_sent


async def test_body_shorter_than_content_length_fails_the_response() -> None:
    async def short(stream: H2Stream) -> None:
        await stream.send_headers([(b":status", b"200"), (b"content-length", b"10")])
        await stream.send_all(b"12345")
        await stream.send_eof()

    async with peer(short) as link:
        out = Collect()
        # h2 itself treats the mismatch as a connection error (PeerMisbehaved); either way the
        # response is never completed.  Whether its head got out first depends on whether h2
        # saw HEADERS and the short DATA in the same read, so only completion is asserted.
        with pytest.raises(UpstreamError):
            await forward_over_link(
                link, get(b"api.default.isthmus"), EmptyBody(), out, ctx(), local_site="a"
            )
        assert not out.ended


async def test_early_answer_without_reading_the_body_is_relayed() -> None:
    async def too_large(stream: H2Stream) -> None:
        await stream.send_headers([(b":status", b"413"), (b"content-length", b"0")])
        await stream.send_eof()

    class Endless:
        trailers = ()

        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            await trio.sleep(0.001)
            return b"x" * 1024

    async with peer(too_large) as link:
        out = Collect()
        with trio.fail_after(5):
            await forward_over_link(
                link, get(b"api.default.isthmus"), Endless(), out, ctx(), local_site="a"
            )
        assert out.response is not None and out.response.status == 413 and out.ended


async def test_reset_after_head_stands_as_an_error() -> None:
    async def resets_mid_body(stream: H2Stream) -> None:
        await stream.send_headers([(b":status", b"200")])
        await stream.send_all(b"partial")
        stream.reset(0x2)

    async with peer(resets_mid_body) as link:
        out = Collect()
        with pytest.raises(StreamReset):
            await forward_over_link(
                link, get(b"api.default.isthmus"), BytesBody(b"hi"), out, ctx(), local_site="a"
            )
        assert out.head_sent


@pytest.mark.parametrize(("status", "retry"), [(403, False), (503, True), (502, True)])
async def test_connect_refusals_are_typed(status: int, retry: bool) -> None:
    async def refuse(stream: H2Stream) -> None:
        await stream.send_headers([(b":status", str(status).encode())], end_stream=True)

    async with peer(refuse) as link:
        with pytest.raises(TunnelRejected) as info:
            await open_connect_tunnel(link, b"db.default.isthmus:5432", ctx(), local_site="a")
        assert info.value.http_status == status
        assert info.value.retry_elsewhere is retry
        assert link.statistics().open_streams == 0


async def test_connect_tunnel_has_flow_control_a_slow_reader_slows_the_writer() -> None:
    received = trio.Event()

    async def never_reads(stream: H2Stream) -> None:
        await stream.send_headers([(b":status", b"200")])
        await received.wait()

    async with peer(never_reads) as link:
        tunnel = await open_connect_tunnel(link, b"db.default.isthmus:1", ctx(), local_site="a")
        await tunnel.send_all(b"x" * 16384)  # within the window: goes through at once
        sent = 16384
        with trio.move_on_after(0.5):  # ends the writer once it is stuck, however slow
            while True:
                await tunnel.send_all(b"x" * 16384)
                sent += 16384
        # The peer's stream window (64 KiB by default) bounds what could be sent.
        assert sent <= 64 * 1024
        received.set()
        await tunnel.aclose()
