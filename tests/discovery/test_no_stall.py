"""The catalog service never processes more than one slice of catalog items per event-loop step.

Why this shape: a request in flight waits for whatever task step is running, so the bound that
matters is the work of one *task step*.  A trio instrument counts, between
``before_task_step`` and ``after_task_step``, the catalog items the core handles -- endpoints
checked (``endpoint_problem``), compared with what a source said before (``Endpoint.__eq__``)
and re-merged (``merge_entry``) -- and the test asserts that no step handled more than
``slice_items`` of any of them.  Counts, not seconds: deterministic on any machine.  With the
applier running the core in one go (the behaviour before slicing), one step handles all 20 000.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.lowlevel

import discovery.catalog
from discovery.events import Event, Resynced, SourceStale
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.service import serve_catalog
from discovery.snapshot import Catalog
from discovery.sources.config import StaticSourceConfig
from discovery.watch import Watch

N = 20_000
SLICE = 500
SVC = [ServiceName(f"svc{i}", "bench") for i in range(50)]


def endpoint(i: int, weight: int = 1) -> Endpoint:
    return Endpoint(
        SVC[i % len(SVC)], f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}", 80, weight=weight
    )


class ItemsPerStep(trio.abc.Instrument):
    """The largest number of each kind of catalog item handled within one task step."""

    def __init__(self) -> None:
        self.current = {"checked": 0, "compared": 0, "merged": 0}
        self.most = dict(self.current)
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        for kind in self.current:
            self.current[kind] = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        self.steps += 1
        for kind, count in self.current.items():
            self.most[kind] = max(self.most[kind], count)

    def counting(self, kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            self.current[kind] += 1
            return fn(*args)

        return wrapper


class Feed:
    """A source whose events the test sends by hand (through the service's real channel)."""

    def __init__(self) -> None:
        self.send: trio.MemorySendChannel[Event] | None = None

    async def serve(
        self,
        config: StaticSourceConfig,
        send: trio.MemorySendChannel[Event],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        self.send = send
        task_status.started()
        await trio.sleep_forever()


async def until(watch: Watch[Catalog], check: Callable[[Catalog], bool]) -> Catalog:
    with trio.fail_after(600):  # hang guard only (autojump clock)
        seen = -1
        while True:
            seen, catalog = await watch.wait_newer(seen)
            if check(catalog):
                return catalog


async def test_no_task_step_handles_more_than_a_slice(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = ItemsPerStep()
    monkeypatch.setattr(
        discovery.catalog, "merge_entry", probe.counting("merged", discovery.catalog.merge_entry)
    )
    monkeypatch.setattr(
        discovery.catalog,
        "endpoint_problem",
        probe.counting("checked", discovery.catalog.endpoint_problem),
    )
    monkeypatch.setattr(Endpoint, "__eq__", probe.counting("compared", Endpoint.__eq__))
    feed = Feed()
    config = dataclasses.replace(StaticSourceConfig(kind="static", name="consul"), kind="feed")  # type: ignore[arg-type]
    watch: Watch[Catalog] = Watch(Catalog())
    policy = Policy(order=("consul",), default_grace_s=5.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(
            lambda **kw: serve_catalog(
                [config],
                watch,
                policy=policy,
                resolve=lambda kind: feed.serve,
                slice_items=SLICE,
                **kw,
            )
        )
        assert feed.send is not None
        trio.lowlevel.add_instrument(probe)
        try:
            # 1. a first full resync: every endpoint checked, stored and merged
            await feed.send.send(Resynced("consul", tuple(map(endpoint, range(N))), "1", 0.0))
            await until(watch, lambda c: len(c) == N)
            # 2. a reconnect: the same set again, as new objects (each compared, nothing changes)
            await feed.send.send(Resynced("consul", tuple(map(endpoint, range(N))), "2", 0.0))
            await until(watch, lambda c: c.sources["consul"].version == "2")
            # 3. every endpoint changed (compared, checked, re-merged)
            changed = tuple(endpoint(i, weight=2) for i in range(N))
            await feed.send.send(Resynced("consul", changed, "3", 0.0))
            await until(watch, lambda c: c.sources["consul"].version == "3")
            # 4. the source goes stale and its grace runs out: every endpoint re-merged away
            await feed.send.send(SourceStale("consul", "down", 0.0))
            await until(watch, lambda c: len(c) == 0)
        finally:
            trio.lowlevel.remove_instrument(probe)
        nursery.cancel_scope.cancel()
    # The scenario really did the work (so the bound below is not vacuous) ...
    assert all(count > 0 for count in probe.most.values()), probe.most
    # ... and no single step of the event loop did more than one slice of any kind of it.
    assert probe.most["checked"] <= SLICE, probe.most
    assert probe.most["compared"] <= SLICE, probe.most
    assert probe.most["merged"] <= SLICE, probe.most
