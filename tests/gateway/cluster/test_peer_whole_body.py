"""A body held whole (a route mirror's copy) crosses the link with its request's HEADERS.

Why it matters: a mirror copy holds one of its route's ``max_in_flight`` slots until the
peer's answer is in.  Streamed, its body took a DATA write and an END_STREAM write after the
HEADERS (a scheduler pass on each side for each), so the peer's handler started with half a
request and the copy held its slot that much longer; under load across a link, copies were
dropped as ``in_flight`` while the peer sat mostly idle.  Sent whole, the peer's handler
starts with every byte and END_STREAM already there.
"""

from __future__ import annotations

import trio

from gateway.cluster.peer import forward_over_link
from gateway.http.caller_side import caller_body
from gateway.http.exchange import Body, CallContext, Request
from gateway.http.held_body import WHOLE_BODY_MAX, held_whole
from gateway.router.replay import ReplayBody
from gateway.routes.mirror_copy import BodyCopy, MirrorBudget
from gateway.routes.mirrors import HeldBody
from overlay.h2.stream import H2Stream
from tests.gateway.router.router_kit import BytesBody, Collect, peer

BODY = bytes(range(256)) * 4  # 1 KiB, as the mirror benchmark posts


def post(size: int) -> Request:
    return Request(
        b"POST",
        b"http",
        b"api.default.isthmus",
        b"/m",
        ((b"content-length", str(size).encode()),),
    )


def mirror_body(pieces: tuple[bytes, ...]) -> Body:
    """The body a mirror copy reaches the link with: the held copy, behind the retry
    layer's replay reader and the peer cluster's caller guard."""
    copy = BodyCopy(1 << 20, MirrorBudget(1 << 20), sum(map(len, pieces)))
    for piece in pieces:
        assert copy.feed(piece) is None
    assert copy.finish()
    held = HeldBody(copy.pieces(), copy.trailers)
    return caller_body(ReplayBody(held, 0).reader())


class Seen:
    """What the peer's handler found when it started, and the body it then read."""

    def __init__(self) -> None:
        self.at_start: tuple[bool, int] | None = None
        self.body = b""

    async def handler(self, stream: H2Stream) -> None:
        stats = stream.statistics()  # first thing: no scheduler pass since the handler began
        self.at_start = (stats.remote_ended, stats.buffered)
        while piece := await stream.receive_some(65536):
            self.body += piece
        await stream.send_headers([(b":status", b"204")], end_stream=True)


def ctx() -> CallContext:
    return CallContext("a", None, trio.current_time() + 10)


async def test_a_held_body_reaches_the_peer_whole_with_its_headers() -> None:
    seen = Seen()
    async with peer(seen.handler) as link:
        out = Collect()
        with trio.fail_after(5):
            await forward_over_link(
                link,
                post(len(BODY)),
                mirror_body((BODY[:100], BODY[100:])),
                out,
                ctx(),
                local_site="a",
            )
        assert out.response is not None and out.response.status == 204 and out.ended
        assert seen.body == BODY
        # The handler began with the whole request: END_STREAM and every byte were there.
        assert seen.at_start == (True, len(BODY))
        assert link.statistics().open_streams == 0


async def test_a_streamed_body_and_an_oversized_held_one_are_still_sent_piece_by_piece() -> None:
    big = b"y" * (WHOLE_BODY_MAX + 1)
    for body, expected in ((BytesBody(BODY), BODY), (mirror_body((big,)), big)):
        seen = Seen()
        async with peer(seen.handler) as link:
            out = Collect()
            with trio.fail_after(5):
                await forward_over_link(link, post(len(expected)), body, out, ctx(), local_site="a")
            assert out.response is not None and out.response.status == 204
            assert seen.body == expected


def test_held_whole_sees_through_the_wrappers_only_while_nothing_was_read() -> None:
    assert held_whole(mirror_body((b"ab", b"cd"))) == b"abcd"
    assert held_whole(mirror_body((b"x" * (WHOLE_BODY_MAX + 1),))) is None
    assert held_whole(BytesBody(b"abcd")) is None  # a streamed body: unknown until read
    with_trailers = HeldBody((b"ab",), ((b"x-t", b"1"),))
    assert held_whole(with_trailers) is None  # trailers need their own HEADERS frame


async def test_a_partly_read_held_body_is_not_offered_whole() -> None:
    held = HeldBody((b"ab", b"cd"), ())
    replay = ReplayBody(held, 0)
    first = replay.reader()
    assert held_whole(first) == b"abcd"
    assert await first.receive_some(2) == b"ab"
    assert held_whole(first) is None  # half of it went out already
    assert held_whole(replay.reader()) is None
