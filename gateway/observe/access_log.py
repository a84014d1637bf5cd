"""The access log's sink: lines queue in memory (bounded) and a task writes them in batches.

Why not write on the data path: stdout is often a pipe to a log collector, and a collector
that stops reading would block a ``write`` -- and with it every request of the gateway.  Here
the data path only appends a line to a list (:meth:`AccessLog.write`); :meth:`AccessLog.serve`
writes what queued every ``flush_interval_s`` in a worker thread.  When the writer falls
behind by more than ``max_buffer_bytes``, new lines are dropped and counted
(``isthmus_access_log_dropped_total``), never waited for.  On shutdown what queued is written,
and a write a cancelled flush left running finishes before the file is closed (both bounded
by ``close_timeout_s``; past it the close still waits for that write, in its own thread).
"""

from __future__ import annotations

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


def _write(lock: threading.Lock, out: IO[str], text: str) -> None:
    """Write whole lines, one flush (one ``write`` system call) per run of lines.

    Why: the workers of a gateway append to the same file (opened with O_APPEND) or the same
    pipe.  An append is placed whole, and a pipe write of up to PIPE_BUF bytes is never
    mixed with another's, but a text stream flushes wherever its buffer fills -- mid-line --
    so one large write of several processes could interleave inside lines.
    """
    with lock:
        for chunk in line_chunks(text):
            out.write(chunk)
            out.flush()


def _close(lock: threading.Lock, out: IO[str]) -> None:
    with lock:  # after a write still under way: its lines were drained, they must land
        out.close()


def _settle(lock: threading.Lock, out: IO[str]) -> None:
    """Return once no write is under way (stdout is not ours to close): a write abandoned by a
    cancelled flush runs in a daemon thread, which the interpreter's exit would kill mid-way."""
    with lock:
        out.flush()


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
                await self._flush(out)
                await trio.to_thread.run_sync(
                    _close if owned else _settle, self._io_lock, out, abandon_on_cancel=True
                )

    async def _flush(self, out: IO[str]) -> None:
        # Cancelled (shutdown) before its thread starts, ``to_thread.run_sync`` raises without
        # running it: the lines drained for it would be lost.  So the cancellation is checked
        # here, before the drain, with no await in between: the lines stay queued and the
        # shutdown's own flush writes them (two writer processes on one pipe lost a third of
        # their lines now and then in tests/gateway/observe/test_access_log.py).
        await trio.lowlevel.checkpoint_if_cancelled()
        lines = self.drain()
        if not lines:
            return
        text = "\n".join(lines) + "\n"
        try:
            # A stuck pipe blocks the thread, not the gateway; abandoned on shutdown.
            await trio.to_thread.run_sync(_write, self._io_lock, out, text, abandon_on_cancel=True)
        except (OSError, ValueError):
            self.write_errors += len(lines)  # a full disk must not fail requests
