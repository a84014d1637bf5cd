"""The fleet watch and the authority's writes, against the Consul-API test server (real
sockets on loopback).  Every wait has a hang guard; nothing asserts how fast."""

from __future__ import annotations

import random
import time
from collections.abc import AsyncIterator

import pytest
import trio

from discovery.sources.config import ConsulSourceConfig
from gateway.config.fleet import FleetConfig
from gateway.fleet.authority import (
    AuthorityError,
    Conflict,
    history,
    load_version,
    read_current,
    write,
)
from gateway.fleet.consul_kv import ConsulKv, open_kv
from gateway.fleet.document import EMPTY, FleetDocument, load_document_text
from gateway.fleet.state import FleetState
from gateway.fleet.watch import FleetWatch, current_key
from tests.consul_api.server import ConsulApiServer, open_consul_api_server

GUARD_S = 30.0
PREFIX = "isthmus/fleet"


def _doc(n: int) -> FleetDocument:
    return load_document_text(
        f'[[resources]]\nkind = "policies"\nname = "p"\n[resources.spec]\nservice = "s{n}"\n'
    )


@pytest.fixture
async def server() -> AsyncIterator[ConsulApiServer]:
    async with open_consul_api_server(seed=1, acl_token="fleet-token") as srv:
        yield srv


async def _kv(server: ConsulApiServer) -> ConsulKv:
    source = ConsulSourceConfig(kind="consul", name="c", address=server.url, token="fleet-token")
    return await open_kv(source)


class Applied:
    """The reloader's side as the watch sees it: apply, and record what runs."""

    def __init__(self, state: FleetState) -> None:
        self.state = state
        self.docs: list[FleetDocument] = []
        self.event = trio.Event()

    async def __call__(self, doc: FleetDocument) -> None:
        self.docs.append(doc)
        self.state.record_applied(doc, time.time())
        self.event.set()
        self.event = trio.Event()


async def _until(predicate: object) -> None:
    with trio.fail_after(GUARD_S):
        while not predicate():  # type: ignore[operator]  # noqa: ASYNC110 -- state, no event
            await trio.sleep(0.01)


async def test_watch_applies_each_version_and_rejects_a_bad_one(server: ConsulApiServer) -> None:
    kv = await _kv(server)
    state = FleetState("consul", PREFIX, "aws-east")
    applied = Applied(state)
    config = FleetConfig(source="consul", wait_s=60.0)
    watch = FleetWatch(kv, config, state, applied, wall_clock=time.time, rng=random.Random(1))
    async with trio.open_nursery() as nursery:
        await nursery.start(watch.run)
        # No key yet: the empty document runs.
        await _until(lambda: applied.docs == [EMPTY])
        assert state.state == "current" and state.version == EMPTY.version
        await _until(lambda: server.parked == 1)  # a blocking query, not polling
        for n in (1, 2):
            read = await read_current(kv, PREFIX)
            await write(kv, PREFIX, _doc(n), read)
            await _until(lambda n=n: applied.docs[-1:] == [_doc(n)])
        assert state.state == "current" and state.version == _doc(2).version
        # A value that does not decode: rejected, the old version keeps running.
        await kv.put(current_key(PREFIX), b'{"resources": [{"kind": "nope"}]}')
        await _until(lambda: state.rejected is not None)
        assert state.state == "rejected" and state.version == _doc(2).version
        assert state.rejected is not None
        assert {p.path for p in state.rejected.problems} == {
            "fleet.resources[0].kind",
            "fleet.resources[0].name",
        }
        assert state.rejected_total == 1 and applied.docs[-1] == _doc(2)
        # The same document written again (a new ModifyIndex) is not applied twice.
        read = await read_current(kv, PREFIX)
        await write(kv, PREFIX, _doc(2), read)
        await _until(lambda: state.latest == _doc(2).version)
        await write(kv, PREFIX, _doc(3), await read_current(kv, PREFIX))
        await _until(lambda: applied.docs[-1:] == [_doc(3)])
        assert applied.docs == [EMPTY, _doc(1), _doc(2), _doc(3)]
        nursery.cancel_scope.cancel()


async def test_watch_reports_an_unreachable_authority_and_catches_up(
    server: ConsulApiServer,
) -> None:
    kv = await _kv(server)
    state = FleetState("consul", PREFIX)
    applied = Applied(state)
    config = FleetConfig(source="consul", backoff_base_s=0.01, backoff_cap_s=0.05)
    watch = FleetWatch(kv, config, state, applied, wall_clock=time.time, rng=random.Random(1))
    async with trio.open_nursery() as nursery:
        await nursery.start(watch.run)
        await _until(lambda: applied.docs == [EMPTY])
        server.fail_with_500(True)
        await _until(lambda: state.state == "unreachable")
        assert state.version == EMPTY.version and "500" in (state.error or "")
        server.kv.put(current_key(PREFIX), _doc(1).canonical_json().encode())  # while down
        server.fail_with_500(False)
        await _until(lambda: applied.docs[-1:] == [_doc(1)])
        assert state.state == "current"
        nursery.cancel_scope.cancel()


async def test_apply_is_compare_and_set(server: ConsulApiServer) -> None:
    kv = await _kv(server)
    first = await read_current(kv, PREFIX)
    assert first.modify_index == 0 and first.document == EMPTY
    await write(kv, PREFIX, _doc(1), first)
    # A second writer that read before the first wrote is refused; nothing changes.
    with pytest.raises(Conflict):
        await write(kv, PREFIX, _doc(2), first)
    assert (await read_current(kv, PREFIX)).document == _doc(1)
    await write(kv, PREFIX, _doc(2), await read_current(kv, PREFIX))
    assert (await read_current(kv, PREFIX)).document == _doc(2)


async def test_history_is_bounded_and_rollback_restores(server: ConsulApiServer) -> None:
    kv = await _kv(server)
    for n in range(5):
        await write(kv, PREFIX, _doc(n), await read_current(kv, PREFIX), keep=3)
    assert await history(kv, PREFIX) == [_doc(n).version for n in (2, 3, 4)]
    old = await load_version(kv, PREFIX, _doc(2).version)
    assert old == _doc(2)
    await write(kv, PREFIX, old, await read_current(kv, PREFIX), keep=3)
    assert (await read_current(kv, PREFIX)).document == _doc(2)
    assert await history(kv, PREFIX) == [_doc(n).version for n in (3, 4, 2)]
    with pytest.raises(AuthorityError, match="not in the history"):
        await load_version(kv, PREFIX, _doc(0).version)


async def test_writes_need_the_token(server: ConsulApiServer) -> None:
    source = ConsulSourceConfig(kind="consul", name="c", address=server.url)
    anonymous = await open_kv(source)
    from discovery.sources.consul_parse import ConsulAclDenied

    with pytest.raises(ConsulAclDenied):
        await write(anonymous, PREFIX, _doc(1), await read_current(await _kv(server), PREFIX))


async def test_a_failing_apply_costs_that_version_only(server: ConsulApiServer) -> None:
    kv = await _kv(server)
    state = FleetState("consul", PREFIX)
    calls: list[FleetDocument] = []

    async def broken(doc: FleetDocument) -> None:
        calls.append(doc)
        if doc == _doc(1):
            raise RuntimeError("a bug")
        state.record_applied(doc, time.time())

    watch = FleetWatch(kv, FleetConfig(source="consul"), state, broken, wall_clock=time.time)
    async with trio.open_nursery() as nursery:
        await nursery.start(watch.run)
        await _until(lambda: state.version == EMPTY.version)
        await write(kv, PREFIX, _doc(1), await read_current(kv, PREFIX))
        await _until(lambda: state.rejected is not None)
        assert state.state == "rejected" and state.version == EMPTY.version
        await write(kv, PREFIX, _doc(2), await read_current(kv, PREFIX))
        await _until(lambda: state.version == _doc(2).version)
        nursery.cancel_scope.cancel()
