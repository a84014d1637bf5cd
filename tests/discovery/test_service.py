"""The catalog service: real sources in a nursery, restarts with backoff, one consistent view."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

import pytest
import trio

from discovery.catalog import routable
from discovery.events import Added, Event, Resynced
from discovery.merge import Policy, recompute
from discovery.model import Endpoint, ServiceName
from discovery.service import serve_catalog
from discovery.snapshot import Catalog
from discovery.sources import registry
from discovery.sources.config import StaticEndpointConfig, StaticSourceConfig
from discovery.sources.registry import SourceUnavailable, serve_function
from discovery.sources.static import serve_static_source
from discovery.watch import Watch
from foundation.errors import DiscoveryError

API = ServiceName("api", "payments")
A = Endpoint(API, "10.0.0.1", 80)
B = Endpoint(API, "10.0.0.2", 80)


def static(name: str, *endpoints: tuple[str, int, int]) -> StaticSourceConfig:
    return StaticSourceConfig(
        kind="static",
        name=name,
        endpoints=tuple(
            StaticEndpointConfig(service="api", namespace="payments", address=a, port=p, weight=w)
            for a, p, w in endpoints
        ),
    )


def custom(name: str, kind: str) -> StaticSourceConfig:
    return dataclasses.replace(StaticSourceConfig(kind="static", name=name), kind=kind)  # type: ignore[arg-type]


def resolver(**kinds: Callable[..., Any]) -> Callable[[str], Any]:
    def resolve(kind: str) -> Any:
        return kinds[kind] if kind in kinds else serve_function(kind)

    return resolve


async def until(watch: Watch[Catalog], check: Callable[[Catalog], bool], within: float) -> Catalog:
    """Wait (bounded) for a published catalog that satisfies ``check``."""
    with trio.fail_after(within):
        seen = -1
        while True:
            seen, catalog = await watch.wait_newer(seen)
            if check(catalog):
                return catalog


async def test_static_sources_merge_with_config_order_as_precedence() -> None:
    configs = [
        static("pinned", ("10.0.0.1", 80, 9)),
        static("local", ("10.0.0.1", 80, 1), ("10.0.0.2", 80, 1)),
    ]
    watch = Watch(Catalog())
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_catalog, configs, watch)
        # started means: what the sources said while starting is already published.
        catalog = watch.latest
        nursery.cancel_scope.cancel()
    assert len(catalog) == 2 and len(catalog.sources) == 2
    first, second = catalog.endpoints(API)
    assert first.sources == ("pinned", "local") and first.endpoint.weight == 9
    assert second.sources == ("local",)
    assert routable(catalog, API, trio.current_time()) == (first.endpoint, second.endpoint)


async def test_crashing_source_is_restarted_with_backoff_and_others_keep_going(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    starts: list[float] = []

    async def flaky(config: Any, send: trio.MemorySendChannel[Event], *, task_status: Any) -> None:
        starts.append(trio.current_time())
        await send.send(Resynced(config.name, (A,), str(len(starts)), trio.current_time()))
        task_status.started()
        if len(starts) < 4:
            await trio.sleep(1)
            raise DiscoveryError(f"lost the agent (run {len(starts)})")
        await trio.sleep_forever()

    configs = [custom("flaky", "flaky"), static("local", ("10.0.0.2", 80, 1))]
    watch = Watch(Catalog())
    snapshots: list[Catalog] = []
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: serve_catalog(
                    configs,
                    watch,
                    resolve=resolver(flaky=flaky),
                    rng=lambda: 0.5,
                    task_status=task_status,
                )
            )

            async def record() -> None:
                async for catalog in watch.subscribe():
                    snapshots.append(catalog)

            nursery.start_soon(record)
            await until(
                watch,
                lambda c: c.source("flaky") is not None and c.source("flaky").version == "4",
                120,
            )  # type: ignore[union-attr]
            nursery.cancel_scope.cancel()
    assert len(starts) == 4
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert all(g > 1.0 for g in gaps) and gaps == sorted(gaps)  # backoff grows
    # While the source was down, its endpoint stayed listed, stale and routable.
    stale = [c for c in snapshots if c.source("flaky") is not None and c.source("flaky").stale]  # type: ignore[union-attr]
    assert stale and all(A in routable(c, API, c.source("flaky").stale_since) for c in stale)  # type: ignore[union-attr]
    final = snapshots[-1]
    assert {e.key for e in final.entries()} == {A.key, B.key}
    assert not final.source("flaky").stale  # type: ignore[union-attr]
    assert "lost the agent (run 3)" in caplog.text


async def test_a_dead_source_goes_stale_then_its_endpoints_expire(
    autojump_clock: trio.abc.Clock,
) -> None:
    runs = 0

    async def dying(config: Any, send: trio.MemorySendChannel[Event], *, task_status: Any) -> None:
        nonlocal runs
        runs += 1
        if runs == 1:
            await send.send(Resynced(config.name, (A,), "1", trio.current_time()))
            task_status.started()
            await trio.sleep(2)
        raise DiscoveryError("gone")

    configs = [custom("dying", "dying"), static("local", ("10.0.0.2", 80, 1))]
    watch = Watch(Catalog())
    policy = Policy(order=("dying", "local"), default_grace_s=10.0)
    with trio.fail_after(300):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: serve_catalog(
                    configs,
                    watch,
                    policy=policy,
                    resolve=resolver(dying=dying),
                    task_status=task_status,
                )
            )
            stale = await until(
                watch, lambda c: bool(c.source("dying") and c.source("dying").stale), 30
            )  # type: ignore[union-attr]
            marked = trio.current_time()
            assert A.key in stale and routable(stale, API, marked) == (A, B)
            gone = await until(watch, lambda c: A.key not in c, 60)
            nursery.cancel_scope.cancel()
    assert trio.current_time() - marked == pytest.approx(10.0, abs=0.5)
    assert routable(gone, API, trio.current_time()) == (B,)
    assert runs > 2  # still being restarted


async def test_other_errors_are_bugs_and_propagate() -> None:
    async def broken(config: Any, send: Any, *, task_status: Any) -> None:
        raise ValueError("bug in a source")

    with trio.fail_after(5), pytest.raises(BaseException) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: serve_catalog(
                    [custom("b", "broken")],
                    Watch(Catalog()),
                    resolve=resolver(broken=broken),
                    task_status=task_status,
                )
            )
    assert "bug in a source" in repr(info.value)


async def test_missing_source_module_is_a_clear_error_before_anything_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(registry.KINDS, "mdns", ("discovery.sources.not_built_yet", "serve"))
    started: list[str] = []

    async def spy(config: Any, send: Any, *, task_status: Any) -> None:
        started.append(config.name)
        task_status.started()

    configs = [custom("s", "spy"), dataclasses.replace(static("m"), kind="mdns")]
    with pytest.raises(SourceUnavailable, match=r"discovery\.sources\.not_built_yet"):
        await serve_catalog(configs, Watch(Catalog()), resolve=resolver(spy=spy))
    assert started == []
    with pytest.raises(SourceUnavailable, match="unknown source kind 'carrier-pigeon'"):
        serve_function("carrier-pigeon")


def test_registry_finds_the_built_in_sources() -> None:
    assert serve_function("static") is serve_static_source
    for kind in ("mdns", "consul"):
        try:
            assert callable(serve_function(kind))
        except SourceUnavailable as exc:  # another helper's module may not be merged yet
            pytest.skip(str(exc))


async def test_a_flood_of_events_and_bad_input_keeps_the_catalog_consistent(
    caplog: pytest.LogCaptureFixture,
) -> None:
    many = [
        Endpoint(ServiceName(f"s{i % 50}"), f"10.1.{i // 250}.{i % 250}", 80) for i in range(10_000)
    ]

    async def flood(config: Any, send: trio.MemorySendChannel[Event], *, task_status: Any) -> None:
        task_status.started()
        for e in many:
            await send.send(Added(config.name, e, "1", 0.0))
        bad = [dataclasses.replace(e, port=70000 + i) for i, e in enumerate(many[:200])]
        await send.send(Resynced(config.name, tuple(many[5000:]) + tuple(bad), "2", 0.0))
        await trio.sleep_forever()

    watch = Watch(Catalog())
    published = 0
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                lambda task_status: serve_catalog(
                    [custom("f", "flood")],
                    watch,
                    resolve=resolver(flood=flood),
                    task_status=task_status,
                )
            )
            final = await until(
                watch, lambda c: c.source("f") is not None and c.source("f").version == "2", 50
            )  # type: ignore[union-attr]
            published = watch.count
            nursery.cancel_scope.cancel()
    assert len(final) == 5000
    assert final.services == recompute(Policy.from_sources([]), final.sources, final.views)
    assert published < 1000  # events were batched, not one snapshot each
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert 1 <= len(refused) <= 10  # 200 bad endpoints, a bounded number of log lines
