"""A link runs on the lean HTTP/2 engine unless told otherwise, both of its connections (the
outer one and the reverse one inside a CONNECT stream), and either end may run either engine:
both speak plain RFC 9113, so a site can fall back to h2 while its peers stay lean."""

from __future__ import annotations

from typing import cast

import pytest
import trio
import trio.testing

from foundation.spiffe_id import SpiffeId
from overlay.h2.limits import EngineName, H2Limits
from overlay.h2.stream import H2Stream
from overlay.link.link import Link
from overlay.link.session import LinkSession
from tests.overlay.peering.memory_links import MemoryLink

PEER = SpiffeId.parse("spiffe://example.org/isthmus/site/b")
GET = [(":method", "GET"), (":scheme", "https"), (":path", "/"), (":authority", "a.b.isthmus")]


async def _answer(stream: H2Stream) -> None:
    await stream.send_response([(":status", "200")], b"from %d" % stream.stream_id)


async def _get(session: LinkSession) -> bytes:
    assert session.client is not None
    stream = await session.client.open_stream(GET, end_stream=True)
    assert dict(await stream.response_headers())[b":status"] == b"200"
    body = b""
    while data := await stream.receive_some():
        body += data
    return body


def _session(stream: trio.abc.Stream, *, dialed: bool, engine: EngineName | None) -> LinkSession:
    return LinkSession(
        cast(Link, MemoryLink(stream, PEER)),
        dialed=dialed,
        handler=_answer,
        limits=None if engine is None else H2Limits(engine=engine),
        ping_interval=None,
    )


@pytest.mark.parametrize(
    ("dialer", "acceptor"),
    [(None, None), ("h2", "h2"), ("lean", "h2"), ("h2", "lean")],
)
async def test_both_connections_run_the_named_engine_and_interoperate(
    dialer: EngineName | None, acceptor: EngineName | None
) -> None:
    a, b = trio.testing.memory_stream_pair()
    dialed = _session(a, dialed=True, engine=dialer)
    accepted = _session(b, dialed=False, engine=acceptor)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            async with trio.open_nursery() as setup:  # each is up once the other has answered
                setup.start_soon(nursery.start, accepted.run)
                setup.start_soon(nursery.start, dialed.run)
            assert await _get(dialed) == b"from 3"  # stream 1 carries the reverse connection
            assert await _get(accepted) == b"from 1"  # through the reverse connection
            for session, engine in ((dialed, dialer), (accepted, acceptor)):
                assert session.client is not None
                assert session.outer.engine_name == (engine or "lean")
                assert session.client.engine_name == (engine or "lean")
            await dialed.aclose()
