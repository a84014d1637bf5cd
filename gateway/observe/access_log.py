"""The access log's sink: lines queue in memory (bounded) and a task writes them in batches.

Why not write on the data path: stdout is often a pipe to a log collector, and a collector
that stops reading would block a ``write`` -- and with it every request of the gateway.  Here
the data path only appends a line to a list (:meth:`AccessLog.write`); :meth:`AccessLog.serve`
writes what queued every ``flush_interval_s`` in a worker thread.  When the writer falls
behind by more than ``max_buffer_bytes``, new lines are dropped and counted
(``isthmus_access_log_dropped_total``), never waited for.  On shutdown what queued is written,
and a write a cancelled flush left running finishes before the file is closed (both bounded
by ``close_timeout_s``; past it the close still waits for that write, in its own thread).
A flush cancelled before its thread took the lock (not yet started, or started late on a busy
machine) leaves its lines to the shutdown, which writes them itself (:class:`_Batch`).
"""

from __future__ import annotations

import contextlib
import sys
import threading
from typing import IO

import trio

__all__ = ["AccessLog"]

FLUSH_INTERVAL_S = 0.1
MAX_BUFFER_BYTES = 4 * 1024 * 1024
CLOSE_TIMEOUT_S = 2.0


#: The most bytes one write of whole lines carries: a pipe's atomic write size (PIPE_BUF).
ATOMIC_WRITE_BYTES = 4096


def line_chunks(text: str, limit: int = ATOMIC_WRITE_BYTES) -> list[str]:
    """``text`` (whole lines) cut into runs of whole lines of at most ``limit`` characters
    each (a longer line is a run of its own)."""
    chunks: list[str] = []
    start = size = 0
    for line in text.splitlines(keepends=True):
        if size and size + len(line) > limit:
            chunks.append(text[start : start + size])
            start, size = start + size, 0
        size += len(line)
    if size:
        chunks.append(text[start : start + size])
    return chunks


class _Batch:
    """The lines one flush drained, written exactly once: by the flush's thread, or by the
    shutdown's when that flush was cancelled before its thread took the lock.

    Why: the lock alone does not order the two.  A thread handed a write may not run for a
    while (a busy machine; the default thread limiter full), and a shutdown that takes the
    lock first finds no write under way: for stdout the process then exits and kills the
    write thread, for a file the close goes first -- either way the batch was lost (two
    writer processes on one pipe lost a third of their lines about one run in eight under
    load).  ``taken`` is read and set under the lock only.
    """

    __slots__ = ("count", "taken", "text")

    def __init__(self, lines: list[str]) -> None:
        self.text = "\n".join(lines) + "\n"
        self.count = len(lines)
        self.taken = False


def _put(out: IO[str], batch: _Batch) -> None:
    """Write ``batch`` unless it was (under the sink's lock), one flush (one ``write`` system
    call) per run of lines.

    Why runs: the workers of a gateway append to the same file (opened with O_APPEND) or the
    same pipe.  An append is placed whole, and a pipe write of up to PIPE_BUF bytes is never
    mixed with another's, but a text stream flushes wherever its buffer fills -- mid-line --
    so one large write of several processes could interleave inside lines.
    """
    if batch.taken:
        return
    batch.taken = True
    for chunk in line_chunks(batch.text):
        out.write(chunk)
        out.flush()


def _write(lock: threading.Lock, out: IO[str], batch: _Batch) -> None:
    """A flush's thread: the batch, unless the shutdown already wrote it."""
    with lock:
        _put(out, batch)


def _finish(lock: threading.Lock, out: IO[str], batches: list[_Batch], close: bool) -> int:
    """The shutdown's thread: after a write still under way (it holds the lock), write every
    batch no thread took, then close the file (ours) or flush stdout (not ours to close: a
    write left to a daemon thread would be killed by the interpreter's exit).  Returns the
    lines lost to write errors."""
    errors = 0
    with lock:
        for batch in batches:
            try:
                _put(out, batch)
            except (OSError, ValueError):
                errors += batch.count
        with contextlib.suppress(OSError, ValueError):  # each run was flushed: nothing lost
            if close:
                out.close()
            else:
                out.flush()
    return errors


class AccessLog:
    """JSON lines to stdout (``path = "-"``) or a file (appended)."""

    def __init__(
        self,
        path: str,
        sample_rate: float,
        *,
        max_buffer_bytes: int = MAX_BUFFER_BYTES,
        flush_interval_s: float = FLUSH_INTERVAL_S,
        close_timeout_s: float = CLOSE_TIMEOUT_S,
    ) -> None:
        self.path = path
        self.sample_rate = sample_rate
        self.max_buffer_bytes = max_buffer_bytes
        self.flush_interval_s = flush_interval_s
        self.close_timeout_s = close_timeout_s
        self.dropped = 0
        self.write_errors = 0
        self._lines: list[str] = []
        self._size = 0
        # A write abandoned by a cancelled flush (shutdown) still runs in its thread: the
        # file is closed only after it, so the lines it carries are not lost.
        self._io_lock = threading.Lock()
        # The batch of a flush under way, kept when shutdown cancels it (see _Batch).
        self._unfinished: _Batch | None = None

    def write(self, line: str) -> None:
        """Queue one line (the data path's whole cost); dropped when the queue is full."""
        size = len(line) + 1
        if self._size + size > self.max_buffer_bytes:
            self.dropped += 1
            return
        self._lines.append(line)
        self._size += size

    def drain(self) -> list[str]:
        """Take every queued line (the writer task; tests)."""
        lines, self._lines, self._size = self._lines, [], 0
        return lines

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write queued lines until cancelled, then what is left (bounded)."""
        owned = self.path != "-"
        out: IO[str] = (
            open(self.path, "a", encoding="utf-8")  # noqa: SIM115,ASYNC230 -- opened once
            if owned
            else sys.stdout
        )
        try:
            task_status.started()
            while True:
                await trio.sleep(self.flush_interval_s)
                await self._flush(out)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(self.close_timeout_s):
                batches = [] if self._unfinished is None else [self._unfinished]
                if lines := self.drain():
                    batches.append(_Batch(lines))
                self._unfinished = None
                self.write_errors += await trio.to_thread.run_sync(
                    _finish, self._io_lock, out, batches, owned, abandon_on_cancel=True
                )

    async def _flush(self, out: IO[str]) -> None:
        # Cancelled (shutdown) here, the lines stay queued for the shutdown: the check comes
        # before the drain, with no await in between.
        await trio.lowlevel.checkpoint_if_cancelled()
        lines = self.drain()
        if not lines:
            return
        # Kept until the write returns: cancelled after the drain (before its thread started,
        # or while it runs), the shutdown writes the batch unless the thread took it.
        batch = self._unfinished = _Batch(lines)
        try:
            # A stuck pipe blocks the thread, not the gateway; abandoned on shutdown.
            await trio.to_thread.run_sync(_write, self._io_lock, out, batch, abandon_on_cancel=True)
        except (OSError, ValueError):
            self.write_errors += batch.count  # a full disk must not fail requests
        self._unfinished = None
