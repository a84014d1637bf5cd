"""Start, watch, restart and drain a supervisor's worker processes.

Theory of operation
-------------------
The pool owns one *slot* per worker index.  A slot's task loops:

1. make two private socketpairs -- the control channel (``SOCK_STREAM``) and the hand-off
   socket (``SOCK_DGRAM``, connection fds worker -> supervisor);
2. start ``python -m gateway.cli worker CONFIG --index i --channel-fd X --handoff-fd Y`` with
   the child's two ends inherited (``pass_fds``: the same numbers in the child; every other
   descriptor of ours is close-on-exec, so no worker holds a sibling's channel), then close
   the child's ends here.  So the worker's exit is an EOF on our end, and our exit -- even by
   SIGKILL -- is an EOF on the worker's end, on which a worker exits at once: no orphan keeps
   serving a port with a frozen catalog;
3. serve the channel and the hand-off socket through the callbacks the supervisor gave
   (:class:`WorkerPool` knows no message but :class:`Drain`);
4. wait for the process to exit; unless the pool is draining, log why (exit code or signal)
   and start it again after a backoff (:class:`RestartBackoff`: 0.5 s doubling to 30 s,
   back to 0.5 s once a worker stayed up 60 s), so a worker that dies at start-up costs a
   few starts a minute, not a busy loop.

A drain sends ``Drain(grace_s)`` on every channel (the worker stops accepting and finishes
what is in flight, docs/workers.md), waits for every worker to exit up to ``grace_s`` plus
:data:`KILL_AFTER_S`, then SIGKILLs the ones left -- our own children, through their process
handles (by PID), never by name.

Workers run in their own process group: a Ctrl-C in a terminal reaches the supervisor only,
which drains them, instead of every worker at once cutting its requests short.  Their stdout
and stderr are the supervisor's (each log line says ``worker=i``, see
:func:`gateway.logs.setup_logging`).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import trio

from gateway.workers.channel import Channel, ChannelClosed, channel_from_socket
from gateway.workers.messages import Drain

log = logging.getLogger("isthmus.workers")

#: After a drain's grace, how long a worker may still take to exit before SIGKILL; also how
#: long a stopping worker gets between its channel closing and SIGKILL.
KILL_AFTER_S = 5.0
#: The longest a ``Drain`` message may take to send (it is a few bytes on a local socket;
#: a worker whose socket buffer is full is not reading, and is killed after the grace).
SEND_DRAIN_TIMEOUT_S = 1.0
#: The worker program: ``isthmus worker`` (gateway/commands/worker.py).
WORKER_PROGRAM: tuple[str, ...] = (sys.executable, "-m", "gateway.cli", "worker")

OnChannel = Callable[[int, Channel], Awaitable[None]]
OnHandoff = Callable[[int, trio.socket.SocketType], Awaitable[None]]


class WorkerProcess(Protocol):
    """What the pool uses of a worker's process: a ``trio.Process``, or a
    :class:`~gateway.workers.priority.ChildProcess` when the supervisor runs at a lower
    priority than its workers."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, signum: int) -> None: ...

    def kill(self) -> None: ...


#: How a worker process is started: ``trio.lowlevel.open_process``'s signature, no pipes.
Spawn = Callable[..., Awaitable[WorkerProcess]]


class WorkerStartError(Exception):
    """The first start of a worker failed (no program, no fds): the supervisor cannot serve."""


@dataclass(frozen=True, slots=True)
class RestartBackoff:
    """When to start a worker again after it exited (pure: the caller measures time)."""

    base_s: float = 0.5
    cap_s: float = 30.0
    #: A worker up at least this long before it exited starts a new streak (``base_s``).
    reset_after_s: float = 60.0

    def after_exit(self, streak: int, up_for_s: float) -> tuple[int, float]:
        """``(streak, delay)`` for a worker that exited after ``up_for_s`` seconds, when the
        ``streak`` exits before it came each sooner than ``reset_after_s`` after its start."""
        streak = 1 if up_for_s >= self.reset_after_s else streak + 1
        return streak, min(self.cap_s, self.base_s * 2.0 ** min(streak - 1, 64))


def describe_exit(returncode: int | None) -> str:
    """Why a worker ended, for the log and ``/workers``: ``exit code 3``, ``signal SIGKILL``."""
    if returncode is None:
        return "running"
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


@dataclass
class _Slot:
    """One worker index's mutable state (owned by the pool; read by :meth:`workers_status`)."""

    index: int
    state: str = "starting"  # starting, running, restarting, stopping, stopped
    process: WorkerProcess | None = None
    channel: Channel | None = None
    up_since: float | None = None  # wall clock, for people
    started_at: float = 0.0  # trio clock, for the backoff
    restarts: int = 0
    streak: int = 0
    last_exit: str | None = None
    restart_delays: list[float] = field(default_factory=list)  # the last few, for tests
    drain_sent: bool = False
    stopped: trio.Event = field(default_factory=trio.Event)


class WorkerPool:
    """``count`` worker processes of one supervisor; see the module docstring.

    ``on_channel(index, channel)`` serves a worker's control channel for as long as that
    process lives (it is cancelled when the process exits; when it returns, or fails, the
    channel is closed and the worker exits on that EOF, to be started again).
    ``on_handoff(index, sock)`` serves its hand-off socket likewise.
    """

    def __init__(
        self,
        *,
        count: int,
        config_path: Path,
        on_channel: OnChannel,
        on_handoff: OnHandoff,
        extra_args: Sequence[str] = (),
        program: Sequence[str] = WORKER_PROGRAM,
        backoff: RestartBackoff = RestartBackoff(),
        kill_after_s: float = KILL_AFTER_S,
        spawn: Spawn = trio.lowlevel.open_process,
    ) -> None:
        if count < 1:
            raise ValueError(f"a worker pool needs at least one worker, not {count}")
        self.count = count
        self.config_path = config_path
        self.on_channel = on_channel
        self.on_handoff = on_handoff
        self.extra_args = tuple(extra_args)
        self.program = tuple(program)
        self.backoff = backoff
        self.kill_after_s = kill_after_s
        #: ``SpawnThread.open_process`` when the supervisor runs at a lower priority than
        #: its workers (gateway/workers/priority.py).
        self.spawn = spawn
        self._slots = [_Slot(i) for i in range(count)]
        self._draining = trio.Event()
        self._grace_s = 0.0  # the drain's, for a worker (re)started while it runs

    # -- run --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every worker (``started`` once each process exists, not yet serving), keep
        them running, and return once :meth:`drain` has stopped them all.  Cancelled, it
        stops them without a grace: each sees its channel close, then SIGKILL after
        :data:`KILL_AFTER_S`."""
        async with trio.open_nursery() as nursery:
            for slot in self._slots:
                await nursery.start(self._keep, slot)
            task_status.started()

    async def _keep(self, slot: _Slot, *, task_status: trio.TaskStatus[None]) -> None:
        first = True
        try:
            while not self._draining.is_set():
                try:
                    process, channel, dgram = await self._spawn(slot)
                except OSError as exc:
                    if first:
                        raise WorkerStartError(f"cannot start worker {slot.index}: {exc}") from exc
                    outcome = f"start failed: {exc}"
                    log.error("worker %d: %s", slot.index, outcome)
                else:
                    if first:
                        task_status.started()
                    outcome = await self._watch(slot, process, channel, dgram)
                first = False
                slot.last_exit = outcome
                if self._draining.is_set():
                    log.info("worker %d stopped (%s)", slot.index, outcome)
                    break
                up_for = trio.current_time() - slot.started_at
                slot.streak, delay = self.backoff.after_exit(slot.streak, up_for)
                slot.restart_delays = [*slot.restart_delays[-9:], delay]
                slot.state = "restarting"
                log.warning(
                    "worker %d exited (%s) after %.1f s; starting it again in %.1f s",
                    slot.index,
                    outcome,
                    up_for,
                    delay,
                )
                with trio.move_on_after(delay):
                    await self._draining.wait()
                if not self._draining.is_set():
                    slot.restarts += 1
        finally:
            slot.state = "stopped"
            slot.process = None
            slot.stopped.set()

    async def _spawn(
        self, slot: _Slot
    ) -> tuple[WorkerProcess, Channel, trio.socket.SocketType]:
        """Start worker ``slot.index`` with its two socketpair ends inherited."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        dgram_ours, dgram_theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            argv = [
                *self.program,
                str(self.config_path),
                "--index",
                str(slot.index),
                "--channel-fd",
                str(theirs.fileno()),
                "--handoff-fd",
                str(dgram_theirs.fileno()),
                *self.extra_args,
            ]
            process = await self.spawn(
                argv,
                pass_fds=(theirs.fileno(), dgram_theirs.fileno()),
                process_group=0,  # a terminal's Ctrl-C is the supervisor's to handle
            )
        except BaseException:
            for sock in (ours, dgram_ours):
                sock.close()
            raise
        finally:  # the child has its copies; ours would hide its exit (no EOF)
            theirs.close()
            dgram_theirs.close()
        slot.process = process
        slot.state = "running"
        slot.started_at = trio.current_time()
        slot.up_since = time.time()
        slot.drain_sent = False
        slot.channel = channel_from_socket(ours)
        log.info("worker %d started (pid %d)", slot.index, process.pid)
        return process, slot.channel, trio.socket.from_stdlib_socket(dgram_ours)

    async def _watch(
        self,
        slot: _Slot,
        process: WorkerProcess,
        channel: Channel,
        dgram: trio.socket.SocketType,
    ) -> str:
        """Serve the worker until its process exits; why it exited."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._serve_channel, slot, channel)
                nursery.start_soon(self._serve_handoff, slot, dgram)
                if self._draining.is_set():  # started while the pool began to drain
                    nursery.start_soon(self._send_drain, slot, self._grace_s)
                await process.wait()
                nursery.cancel_scope.cancel()
        finally:
            await self._stop(slot, process, channel)
            dgram.close()
            slot.last_exit = describe_exit(process.returncode)
        return slot.last_exit

    async def _serve_channel(self, slot: _Slot, channel: Channel) -> None:
        try:
            await self.on_channel(slot.index, channel)
        except ChannelClosed:
            pass
        except Exception:  # a bug in the channel's server: this worker starts over
            log.exception("worker %d: serving its channel failed; closing it", slot.index)
        with trio.CancelScope(shield=True):
            await channel.aclose()  # the worker exits on this EOF

    async def _serve_handoff(self, slot: _Slot, dgram: trio.socket.SocketType) -> None:
        try:
            await self.on_handoff(slot.index, dgram)
        except Exception:
            log.exception("worker %d: serving its hand-offs failed", slot.index)

    async def _stop(self, slot: _Slot, process: WorkerProcess, channel: Channel) -> None:
        """Make sure the process is gone: close its channel (it exits on the EOF), then
        SIGKILL it if it is still there after :attr:`kill_after_s`."""
        with trio.CancelScope(shield=True):
            await channel.aclose()
            if process.returncode is None:
                slot.state = "stopping"
                with trio.move_on_after(self.kill_after_s):
                    await process.wait()
            if process.returncode is None:
                log.warning("worker %d (pid %d) did not stop: SIGKILL", slot.index, process.pid)
                process.kill()
                await process.wait()
        slot.channel = None

    # -- drain ------------------------------------------------------------------------------

    async def drain(self, grace_s: float) -> None:
        """Stop every worker gracefully: ``Drain(grace_s)``, up to ``grace_s`` +
        :attr:`kill_after_s` for them to exit, then SIGKILL the rest.  No restarts after."""
        self._grace_s = grace_s
        self._draining.set()
        log.info("draining %d workers (grace %.1f s)", self.count, grace_s)
        async with trio.open_nursery() as nursery:
            for slot in self._slots:
                if slot.channel is not None and slot.state == "running":
                    nursery.start_soon(self._send_drain, slot, grace_s)
        with trio.move_on_after(grace_s + self.kill_after_s):
            for slot in self._slots:
                await slot.stopped.wait()
        for slot in self._slots:
            process = slot.process
            if process is not None and process.returncode is None:
                log.warning(
                    "worker %d (pid %d) still running %.1f s after the drain began: SIGKILL",
                    slot.index,
                    process.pid,
                    grace_s + self.kill_after_s,
                )
                process.kill()
        with trio.move_on_after(self.kill_after_s):
            for slot in self._slots:
                await slot.stopped.wait()

    async def _send_drain(self, slot: _Slot, grace_s: float) -> None:
        channel = slot.channel
        if channel is None or slot.drain_sent:
            return
        slot.drain_sent = True
        with trio.move_on_after(SEND_DRAIN_TIMEOUT_S):
            with contextlib.suppress(ChannelClosed):
                await channel.send(Drain(grace_s))

    # -- status -----------------------------------------------------------------------------

    def workers_status(self) -> dict[int, dict[str, Any]]:
        """Each worker's process, for ``/workers``: pid, state, since when it is up (Unix
        time), restarts, and why it last exited."""
        out: dict[int, dict[str, Any]] = {}
        for slot in self._slots:
            process = slot.process
            running = process is not None and process.returncode is None
            out[slot.index] = {
                "pid": process.pid if running and process is not None else None,
                "state": slot.state,
                "up_since": round(slot.up_since, 3) if running and slot.up_since else None,
                "restarts": slot.restarts,
                "last_exit": slot.last_exit,
            }
        return out

    def restart_delays(self, index: int) -> list[float]:
        """The backoff delays chosen for worker ``index``'s last restarts (oldest first)."""
        return list(self._slots[index].restart_delays)

