"""Tasks in their own cancel scope inside the gateway's nursery, to stop or replace one alone.

Why: the gateway's parts all live in one root nursery (shutdown is its cancellation), but a
reload must stop *one* listener or restart *one* part (discovery, identity watching) while
everything else keeps running.  A :class:`ScopedTasks` gives each such task a key, a cancel
scope and an "ended" event: :meth:`stop` cancels only that task and waits (bounded) until it
has unwound, so a port it held is free again before its replacement binds.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

STOP_TIMEOUT_S = 10.0  # a cancelled task unwinds at its next checkpoint; this is a hang guard

# Starts a task in a nursery and returns what it reported started (e.g. start_listener).
Starter = Callable[[trio.Nursery, Callable[..., Awaitable[None]]], Awaitable[Any]]


async def _plain_start(nursery: trio.Nursery, run: Callable[..., Awaitable[None]]) -> Any:
    return await nursery.start(run)


@dataclass
class _Running:
    scope: trio.CancelScope
    ended: trio.Event


class ScopedTasks:
    """Keyed tasks, each in its own cancel scope in a shared nursery."""

    def __init__(self) -> None:
        self._running: dict[str, _Running] = {}

    def keys(self) -> tuple[str, ...]:
        return tuple(self._running)

    async def start(
        self,
        nursery: trio.Nursery,
        key: str,
        serve: Callable[..., Awaitable[None]],
        *,
        starter: Starter = _plain_start,
    ) -> Any:
        """Start ``serve(task_status=...)`` as ``key``; returns what it reported started.

        If it fails before reporting started, the error propagates and ``key`` stays free.
        """
        if key in self._running:
            raise ValueError(f"{key} is already running")
        running = _Running(trio.CancelScope(), trio.Event())

        async def run(*, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with running.scope:
                    await serve(task_status=task_status)
            finally:
                running.ended.set()
                if self._running.get(key) is running:
                    del self._running[key]

        self._running[key] = running
        try:
            return await starter(nursery, run)
        except BaseException:
            if self._running.get(key) is running:
                del self._running[key]
            raise

    async def stop(self, key: str) -> None:
        """Cancel ``key``'s task and wait (bounded) until it has ended; no-op if not running."""
        running = self._running.pop(key, None)
        if running is None:
            return
        running.scope.cancel()
        with trio.move_on_after(STOP_TIMEOUT_S):
            await running.ended.wait()
