"""The push stream between a control site and a site, over a real HTTP/2 connection pair
(in memory): the authority's push task against the site's inbox, both real."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.lowlevel
import trio.testing

from gateway.config.errors import Problem
from gateway.config.fleet import FleetConfig
from gateway.fleet.document import EMPTY, FleetDocument, load_document_text
from gateway.fleet.site_inbox import FleetInbox
from gateway.fleet.site_push import FleetAuthority
from gateway.fleet.site_store import SiteStore
from gateway.fleet.state import FleetState
from overlay.h2.connection import H2Connection
from overlay.h2.stream import H2Stream

DOC = load_document_text(
    '[[resources]]\nkind = "policies"\nname = "all"\n[resources.spec]\nallow_sites = ["*"]\n'
)
BAD = load_document_text(
    '[[resources]]\nkind = "policies"\nname = "bad"\n[resources.spec]\nallow_sites = ["*"]\n'
)


@asynccontextmanager
async def h2_pair(
    handler: Callable[[H2Stream], Awaitable[None]],
) -> AsyncIterator[H2Connection]:
    a, b = trio.testing.memory_stream_pair()
    client = H2Connection(a, client_side=True, ping_interval=None)
    server = H2Connection(b, client_side=False, handler=handler, ping_interval=None)
    async with trio.open_nursery() as nursery:
        await nursery.start(client.serve)
        await nursery.start(server.serve)
        yield client
        await client.aclose()
        await server.aclose()
        nursery.cancel_scope.cancel()


def site_apply(state: FleetState) -> Callable[[FleetDocument], Awaitable[None]]:
    """The site's reload, reduced to its outcome: BAD is rejected, anything else applied."""

    async def apply(doc: FleetDocument) -> None:
        await trio.lowlevel.checkpoint()
        if doc == BAD:
            state.record_rejected(doc.version, (Problem("fleet.x", "no good here"),), 1.0, doc)
        else:
            state.record_applied(doc, 1.0)

    return apply


B1 = "127.0.0.2:15443"  # the replica of b the pushes go to


def authority(tmp_path: Path) -> FleetAuthority:
    state = FleetState("site", "hq", "hq")

    async def apply(doc: FleetDocument) -> None:
        state.record_applied(doc, 1.0)

    return FleetAuthority(
        site="hq",
        store=SiteStore(tmp_path, max_bytes=64 * 1024, max_resources=100),
        initial=EMPTY,
        state=state,
        apply=apply,
        config=FleetConfig(source="site", authority_site="hq", ack_timeout_s=5.0),
        wall_clock=lambda: 100.0,
    )


def inbox(state: FleetState, authority_site: str = "hq", cache: Path | None = None) -> FleetInbox:
    return FleetInbox(
        authority_site=authority_site,
        state=state,
        apply=site_apply(state),
        max_document_bytes=64 * 1024,
        max_resources=100,
        wall_clock=lambda: 50.0,
        cache=None if cache is None else SiteStore(cache, max_bytes=64 * 1024, max_resources=100),
    )


async def eventually(predicate: Callable[[], bool]) -> None:
    for _ in range(500):  # bounded: 500 turns of 10 ms
        if predicate():
            return
        await trio.sleep(0.01)
    raise AssertionError("condition not reached")


async def test_versions_are_pushed_applied_rejected_and_answered(tmp_path: Path) -> None:
    auth = authority(tmp_path / "hq")
    state = FleetState("site", "hq", "b")
    cache = SiteStore(tmp_path / "b", max_bytes=64 * 1024, max_resources=100)
    box = inbox(state, cache=cache.root)
    assert state.state == "unreachable" and "authority hq unreachable since" in str(state.error)

    async with h2_pair(lambda stream: box("hq", stream)) as conn, trio.open_nursery() as nursery:
        nursery.start_soon(auth._push_over, conn, "b", B1)
        await eventually(lambda: state.version == EMPTY.version)
        assert state.error is None and state.state == "current"
        await auth.write(DOC, EMPTY.version)  # push, not poll: the write wakes the stream
        await eventually(lambda: state.version == DOC.version)
        await eventually(lambda: auth.answers.get("b", B1).version == DOC.version)
        assert auth.answers.get("b", B1).status == "applied"

        await auth.write(BAD, DOC.version)
        await eventually(lambda: auth.answers.get("b", B1).status == "rejected")
        answer = auth.answers.get("b", B1)
        assert answer.version == BAD.version
        assert answer.reason == f"version {BAD.version}: fleet.x: no good here"
        assert state.version == DOC.version and state.state == "rejected"  # the old one serves
        assert cache.read_current() == DOC  # the version applied is kept, to restart on
        nursery.cancel_scope.cancel()
    # The stream is gone: the site keeps its version and says since when it is cut off.
    assert state.version == DOC.version
    assert state.error == "authority hq unreachable since 1970-01-01T00:00:50+00:00"
    assert state.gauges()[2].samples[0][1] == 0.0  # isthmus_fleet_authority_up


async def test_a_push_from_another_peer_is_refused_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    auth = authority(tmp_path)
    await auth.write(DOC, None)
    state = FleetState("site", "hq", "b")
    box = inbox(state)  # its authority is hq; the stream comes from peer "c"
    caplog.set_level(logging.WARNING, "isthmus.fleet")
    async with h2_pair(lambda stream: box("c", stream)) as conn:
        with trio.fail_after(10):  # a hang guard: a refused stream ends at once
            answered = await auth._push_over(conn, "b", B1)
    assert not answered
    assert box.refused_total == 1
    assert state.version is None and state.latest is None  # nothing was applied
    assert "fleet push from peer c refused: only hq" in caplog.text
    assert f"fleet push to b ({B1}) refused: b answered the push stream with b'403'" in caplog.text
