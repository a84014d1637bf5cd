"""The supervisor's side of a reload with workers: what it sends, how long it waits, and what
its answer says when a worker does not confirm (over real channels, on trio's test clock)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import trio
import trio.testing

from discovery.snapshot import Catalog
from discovery.watch import Watch
from gateway.workers.channel import Channel
from gateway.workers.control import Apply
from gateway.workers.messages import ReloadDone
from gateway.workers.snapshot_receiver import NO_MARKS
from gateway.workers.supervise import (
    RELOAD_TIMEOUT_S,
    Supervisor,
    WorkerConn,
    late_workers_problem,
)
from overlay.federation.import_ import ImportTable


def _supervisor(catalog: Watch[Catalog]) -> Supervisor:
    sup = Supervisor(count=2, config_path=Path("gateway.toml"), text="old")
    sup.gw = SimpleNamespace(
        catalog=catalog,
        failing=Watch(NO_MARKS),
        peering=SimpleNamespace(imports=Watch(ImportTable(grace=0.0))),
    )
    return sup


def _connect(sup: Supervisor, nursery: trio.Nursery, count: int = 2) -> list[Channel]:
    """``count`` workers' ends of real channels to ``sup``, whose receivers run in ``nursery``."""
    workers = []
    for index in range(count):
        ours, theirs = trio.testing.memory_stream_pair()
        conn = WorkerConn(index, Channel(ours))
        sup.conns[index] = conn
        workers.append(Channel(theirs))
        nursery.start_soon(sup._receive, conn)
    return workers


async def test_a_reload_waits_for_every_worker_and_names_the_one_that_did_not_confirm(
    autojump_clock: trio.testing.MockClock,
) -> None:
    catalog: Watch[Catalog] = Watch(Catalog())
    sup = _supervisor(catalog)
    async with trio.open_nursery() as nursery:
        workers = _connect(sup, nursery)
        # The reload's new sources are in the catalog watch, not yet in the feed (its
        # follower task has not run): the version sent must hold them all the same.
        catalog.publish(Catalog(version=7))
        got: dict[str, object] = {}

        async def reload() -> None:
            got["problems"] = await sup.reload_workers("admin API", "new", None)
            got["at"] = trio.current_time()

        start = trio.current_time()
        nursery.start_soon(reload)
        applies = [await w.receive() for w in workers]
        for apply in applies:
            assert isinstance(apply, Apply) and apply.text == "new"
            assert apply.snapshot == sup.feed.version
            assert apply.snapshot.catalog == 1  # the new catalog: one step past the start
        await workers[0].send(ReloadDone({"result": "applied"}))  # worker 1 stays silent
        await trio.sleep(RELOAD_TIMEOUT_S * 2)
        nursery.cancel_scope.cancel()
    assert got["problems"] == (late_workers_problem([1], RELOAD_TIMEOUT_S),)
    assert got["at"] == start + RELOAD_TIMEOUT_S  # it waited its bound, then answered
    assert sup.text == "new"  # a worker started from now on runs the new text


async def test_a_reload_confirmed_by_every_worker_answers_without_problems(
    autojump_clock: trio.testing.MockClock,
) -> None:
    sup = _supervisor(Watch(Catalog()))
    async with trio.open_nursery() as nursery:
        workers = _connect(sup, nursery)

        async def confirm(worker: Channel) -> None:
            assert isinstance(await worker.receive(), Apply)
            await trio.sleep(1.0)
            await worker.send(ReloadDone({"result": "applied"}))

        for worker in workers:
            nursery.start_soon(confirm, worker)
        start = trio.current_time()
        assert await sup.reload_workers("SIGHUP", "new", None) == ()
        assert trio.current_time() == start + 1.0  # after the last confirmation, not before
        nursery.cancel_scope.cancel()
