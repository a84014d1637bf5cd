"""Tasks in their own cancel scope inside the gateway's nursery, to stop or replace one alone.

Why: the gateway's parts all live in one root nursery (shutdown is its cancellation), but a
reload must stop *one* listener or restart *one* part (discovery, identity watching) while
everything else keeps running.  A :class:`ScopedTasks` gives each such task a key, a cancel
scope and an "ended" event: :meth:`stop` cancels only that task and waits (bounded) until it
has unwound, so a port it held is free again before its replacement binds.

A caller listener is not cut that way: cancelling its task would cut the requests in flight
on its connections.  Started with its :class:`~gateway.listener.drain.Drain`, it is *drained*
instead: :meth:`stop` begins the drain (the listener closes its sockets at once, its
connections finish what is in flight, exactly as on shutdown) and returns as soon as the
sockets are closed -- the port is free for a replacement, and the reload does not wait for
the grace.  The task ends in the background: when its last connection is done, or when the
grace is over (the rest are cut then).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from gateway.listener.drain import Drain

STOP_TIMEOUT_S = 10.0  # a cancelled task unwinds at its next checkpoint; this is a hang guard

# Starts a task in a nursery and returns what it reported started (e.g. start_listener).
Starter = Callable[[trio.Nursery, Callable[..., Awaitable[None]]], Awaitable[Any]]


async def _plain_start(nursery: trio.Nursery, run: Callable[..., Awaitable[None]]) -> Any:
    return await nursery.start(run)


@dataclass
class _Running:
    scope: trio.CancelScope
    ended: trio.Event
    nursery: trio.Nursery
    drain: Drain | None


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
        drain: Drain | None = None,
    ) -> Any:
        """Start ``serve(task_status=...)`` as ``key``; returns what it reported started.

        ``drain``: the task is a listener serving with this drain; :meth:`stop` drains it.
        If it fails before reporting started, the error propagates and ``key`` stays free.
        """
        if key in self._running:
            raise ValueError(f"{key} is already running")
        running = _Running(trio.CancelScope(), trio.Event(), nursery, drain)

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

    async def stop(self, key: str, *, grace_s: float = 0.0) -> int:
        """Stop ``key``'s task (no-op if not running); the caller connections left draining.

        A task started with a drain is drained: this returns once its listening sockets are
        closed, and it ends in the background once its connections are done or ``grace_s``
        passed.  Any other task is cancelled, and this waits (bounded) until it has ended.
        """
        running = self._running.pop(key, None)
        if running is None:
            return 0
        drain = running.drain
        if drain is not None and not running.ended.is_set():
            drain.begin()
            with trio.move_on_after(STOP_TIMEOUT_S):
                await drain.wait_closed()
            if not drain.listening:
                running.nursery.start_soon(_end_drained, running, drain, grace_s)
                return drain.open_connections
        running.scope.cancel()
        with trio.move_on_after(STOP_TIMEOUT_S):
            await running.ended.wait()
        return 0


async def _end_drained(running: _Running, drain: Drain, grace_s: float) -> None:
    """The background end of a drained listener: its connections finish (bounded by the
    grace), then its task is cancelled, cutting what is still open."""
    await drain.wait_idle(grace_s)
    running.scope.cancel()
