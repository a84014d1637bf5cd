"""Latest-value broadcast: subscribers see the newest value, never a backlog."""

from __future__ import annotations

import tracemalloc

import pytest
import trio

from discovery.watch import Watch, WatchClosed


async def test_slow_subscriber_skips_intermediate_values_and_ends_on_the_latest(
    autojump_clock: trio.abc.Clock,
) -> None:
    watch = Watch(0)
    seen: list[int] = []

    async def slow() -> None:
        async for value in watch.subscribe():
            seen.append(value)
            await trio.sleep(1.0)  # much slower than the publisher

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(slow)
            await trio.sleep(0.1)
            for i in range(1, 101):
                watch.publish(i)  # never blocks, whatever the subscriber does
                await trio.sleep(0.01)
            await trio.sleep(2)
            watch.close()
    assert seen[0] == 0 and seen[-1] == 100
    assert len(seen) < 10  # skipped, not queued
    assert seen == sorted(seen)


async def test_fast_subscribers_see_every_value_when_they_keep_up() -> None:
    watch = Watch("a")
    results: list[list[str]] = [[], []]

    async def sub(out: list[str]) -> None:
        async for value in watch.subscribe():
            out.append(value)

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            for out in results:
                nursery.start_soon(sub, out)
            await trio.testing.wait_all_tasks_blocked()
            for value in "bcd":
                watch.publish(value)
                await trio.testing.wait_all_tasks_blocked()
            watch.close()
    assert results == [list("abcd"), list("abcd")]


async def test_wait_newer_returns_at_once_if_something_newer_exists() -> None:
    watch = Watch(0)
    watch.publish(1)
    watch.publish(2)
    with trio.fail_after(1):
        assert await watch.wait_newer(0) == (2, 2)
    with trio.move_on_after(0.5) as scope:
        await watch.wait_newer(2)
    assert scope.cancelled_caught


async def test_close_ends_waiters_and_forbids_publishing() -> None:
    watch = Watch(0)
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:

            async def waiter() -> None:
                with pytest.raises(WatchClosed):
                    await watch.wait_newer(0)

            nursery.start_soon(waiter)
            await trio.testing.wait_all_tasks_blocked()
            watch.close()
    with pytest.raises(trio.ClosedResourceError):
        watch.publish(1)
    assert [v async for v in watch.subscribe()] == [0]  # final value still delivered
    assert [v async for v in watch.subscribe(include_current=False)] == []


async def test_memory_stays_flat_while_a_subscriber_is_stuck() -> None:
    watch = Watch(b"")
    stuck = trio.Event()

    async def stuck_subscriber() -> None:
        async for _value in watch.subscribe():
            await stuck.wait()  # never reads again until the end

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stuck_subscriber)
            await trio.testing.wait_all_tasks_blocked()
            tracemalloc.start()
            try:
                before = tracemalloc.get_traced_memory()[0]
                for i in range(5_000):
                    watch.publish(bytes(1000) + str(i).encode())
                grown = tracemalloc.get_traced_memory()[0] - before
            finally:
                tracemalloc.stop()
            stuck.set()
            watch.close()
    assert watch.count == 5_000
    assert grown < 50_000  # a queue would hold ~5 MB here
