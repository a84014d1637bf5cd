"""The supervisor yields the CPU to its workers: a lower scheduling priority for itself only.

Why: in worker mode the supervisor does the control plane's bulk work -- Consul answers,
catalog diffs, federation exports, the snapshots it sends -- and the workers serve requests.
On a machine whose cores are busy, a worker woken by a request waits for a core behind
whatever runs there; when that is the supervisor folding a churn, the request waits for the
control plane, which is what issue #16 forbids.  The kernel can decide it for us: the
supervisor's threads run at a higher ``nice`` value (``[site] supervisor_nice``) than its
workers, so a worker woken on a request preempts the supervisor, and the supervisor still
gets its share (at +10 about a tenth of a core a busy worker shares with it: enough for links'
PINGs, health checks and federation, which then just take longer under a saturated data
path).  Measured with ``scripts/bench_stall.py --workers 2`` (README, "Stalls").

How, on Linux, where the nice value is per *thread* and a new thread or process inherits the
value of the thread that creates it:

* :class:`SpawnThread` is one OS thread started *before* the supervisor lowers its priority;
  every worker process is forked from it (:meth:`SpawnThread.open_process`), so a worker --
  first start or restart -- keeps the priority the gateway was started with;
* :func:`lower_threads` then raises the nice value of every other thread of the process;
  threads made later (trio's thread cache, the Consul decoder) are made by those threads and
  inherit it.

Raising one's own nice value needs no privilege; lowering it again would, which is why the
workers must not inherit it in the first place.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Sequence
from typing import Any

import trio

MAX_NICE = 19
"""The highest nice value Linux has (the lowest priority)."""


def thread_ids() -> list[int]:
    """The kernel thread ids of this process's threads."""
    try:
        return sorted(int(name) for name in os.listdir("/proc/self/task"))
    except OSError:
        return [threading.get_native_id()]


def nice_of(tid: int) -> int:
    """The nice value of thread ``tid`` (``PRIO_PROCESS`` names one thread on Linux)."""
    return os.getpriority(os.PRIO_PROCESS, tid)


def lower_threads(increment: int, *, keep: Sequence[int] = ()) -> int:
    """Raise the nice value of every thread of this process but ``keep`` by ``increment``
    (capped at 19); how many threads were changed.  A thread that ended meanwhile is skipped."""
    if increment <= 0:
        return 0
    changed = 0
    for tid in thread_ids():
        if tid in keep:
            continue
        try:
            os.setpriority(os.PRIO_PROCESS, tid, min(MAX_NICE, nice_of(tid) + increment))
        except ProcessLookupError:
            continue
        changed += 1
    return changed


class SpawnThread:
    """One OS thread that starts the worker processes, at the gateway's own priority.

    A plain daemon thread serving a queue, not trio's thread cache: cached threads come and
    go, and one made after :func:`lower_threads` would pass the lower priority on.
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        ready = threading.Event()
        self._thread = threading.Thread(
            target=self._serve, args=(ready,), name="isthmus-spawn", daemon=True
        )
        self._thread.start()
        ready.wait()
        assert self._thread.native_id is not None
        self.native_id: int = self._thread.native_id

    def _serve(self, ready: threading.Event) -> None:
        ready.set()
        while (job := self._jobs.get()) is not None:
            job()

    async def run_sync(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on the spawn thread; its result or exception.  Not cancellable: a child
        forked meanwhile must reach its owner, or nobody would wait for it."""
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()
        box: list[tuple[Any, BaseException | None]] = []

        def job() -> None:
            try:
                box.append((fn(), None))
            except BaseException as exc:  # handed to the caller, raised there
                box.append((None, exc))
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        self._jobs.put(job)
        with trio.CancelScope(shield=True):
            await done.wait()
        value, error = box[0]
        if error is not None:
            raise error
        return value

    async def open_process(self, argv: Sequence[str], **options: Any) -> ChildProcess:
        """Start ``argv`` (``subprocess.Popen`` options, no pipes), forked on this thread."""
        popen = await self.run_sync(lambda: subprocess.Popen(list(argv), **options))
        return ChildProcess(popen)

    def close(self) -> None:
        """Let the thread end (it is a daemon: a supervisor exiting does not wait for it)."""
        self._jobs.put(None)


class ChildProcess:
    """A child started by :class:`SpawnThread`: what the worker pool uses of a trio process.

    Trio's own ``trio.Process`` has no public constructor for a ``Popen`` made on another
    thread, so this is the little the pool needs: ``pid``, ``returncode``, ``kill()`` and an
    async ``wait()`` -- on a pidfd (Linux 5.3+), else on a thread that waits for the child.
    """

    def __init__(self, popen: subprocess.Popen[bytes]) -> None:
        self._popen = popen
        self.pid: int = popen.pid
        self._pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):
            self._pidfd = os.pidfd_open(popen.pid)

    @property
    def returncode(self) -> int | None:
        return self._popen.poll()

    async def wait(self) -> int:
        """The exit status, once the child has exited (reaped here)."""
        if self._pidfd is not None:
            if self._popen.poll() is None:
                await trio.lowlevel.wait_readable(self._pidfd)
        else:
            await trio.to_thread.run_sync(self._popen.wait, abandon_on_cancel=True)
        code = self._popen.wait()
        self._close_pidfd()
        return code

    def send_signal(self, signum: int) -> None:
        """Signal the child, unless it has been reaped (its pid may be someone else's)."""
        if self._popen.poll() is None:
            self._popen.send_signal(signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def _close_pidfd(self) -> None:
        if self._pidfd is not None:
            fd, self._pidfd = self._pidfd, None
            trio.lowlevel.notify_closing(fd)
            os.close(fd)
