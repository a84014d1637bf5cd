"""The accepted TCP connection of a downstream caller: a send-progress timeout, abortive closes.

Why: a caller that reads slowly (or not at all) holds what the gateway sends in two places:
the gateway's own buffers, which the exchange bounds, and the kernel's send queue, which it
does not.  A graceful close does not end the second: the socket sits in FIN-WAIT-1 with
megabytes queued, the FIN behind them, for as long as the caller keeps its window barely
open.  So every listener's accepted socket is wrapped here (one place: the shared accept
loop, :func:`gateway.listener.tcp.serve_tcp`), and whatever speaks to the caller on top of
it -- HTTP/1.1, h2c, TLS with either, L4 tunnels of CONNECT, SNI and service ports -- gets:

* **Send progress.**  ``send_all`` fails with :class:`SendTimeout` (a
  ``trio.BrokenResourceError``, so every layer treats it as a caller that went away) when
  for ``send_timeout`` seconds the kernel took no byte from us *and* the caller
  acknowledged less than :data:`MIN_PROGRESS_BYTES` of those queued (``TIOCOUTQ``), and the
  socket is closed at once with ``SO_LINGER`` {1, 0}: the caller gets a TCP RST and the
  kernel keeps nothing.  Progress, not total time, is bounded: a slow but moving download
  is not cut here, even when it frees the kernel's buffer too slowly to make the socket
  writable; a caller taking a byte a second is.
* **Abortive close after an error.**  A connection that ends after an error (``failed``:
  a response cut short, a broken tunnel, a handler that raised) is closed with RST when
  the kernel still holds data for the caller (``TIOCOUTQ``): that data is a partial
  answer nobody may take as complete.  A clean ending, and an error response written
  whole (a 431, a 404), still closes gracefully so the caller reads every byte.
"""

from __future__ import annotations

import array
import contextlib
import errno
import fcntl
import os
import socket
import struct
import termios

import trio

__all__ = ["CallerStream", "SendTimeout", "mark_failed", "unsent_bytes"]

_LINGER_ABORT = struct.pack("ii", 1, 0)
#: What a caller must take per ``send_timeout`` while our sends are blocked, so that a slow
#: but real reader keeps its connection (16 KiB in 30 s: about 550 bytes/s).
MIN_PROGRESS_BYTES = 16 * 1024


class SendTimeout(trio.BrokenResourceError):
    """The caller took (next to) nothing for ``send_timeout`` seconds; it was reset."""


def unsent_bytes(sock: trio.socket.SocketType) -> int:
    """Bytes in the kernel's send queue not yet acknowledged by the caller (0 if unknown)."""
    buf = array.array("i", [0])
    try:
        fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, buf, True)
    except (OSError, ValueError):
        return 0
    return buf[0]


class CallerStream(trio.abc.HalfCloseableStream):
    """A ``trio.SocketStream`` of a caller with a send-progress timeout (module docstring)."""

    def __init__(self, tcp: trio.SocketStream, *, send_timeout: float) -> None:
        self.tcp = tcp
        self.socket = tcp.socket
        self.send_timeout = send_timeout
        #: The connection ends after an error: close abortively if data is still queued.
        self.failed = False
        #: Closed with RST (send timeout or abortive close).
        self.aborted = False
        #: The kernel's send queue when it last took bytes from us and was then full.
        self._queued_mark: int | None = None
        self._sending = False

    def setsockopt(self, level: int, option: int, value: int | bytes) -> None:
        self.tcp.setsockopt(level, option, value)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:  # as trio.SocketStream: two writers would interleave their bytes
            raise trio.BusyResourceError("another task is sending on this connection")
        self._sending = True
        try:
            await self._send_all(data)
        finally:
            self._sending = False

    async def _send_all(self, data: bytes | bytearray | memoryview) -> None:
        """trio's own loop (try a non-blocking send first, wait for writability only when
        the kernel's buffer is full), with the timer only on that slow path: a cancel scope
        per send would cost a relay about a tenth of its bytes per CPU-second."""
        sock = self.socket
        if sock.did_shutdown_SHUT_WR:
            raise trio.ClosedResourceError("can't send data after sending EOF")
        with memoryview(data) as view:
            if not view:
                await self.tcp.send_all(b"")
                return
            await trio.lowlevel.checkpoint_if_cancelled()
            total = self._write(view)
            if total == len(view):
                await trio.lowlevel.cancel_shielded_checkpoint()
                return
            # The kernel's buffer is full: from here the caller has send_timeout to make room.
            self._queued_mark = unsent_bytes(sock)
            while True:  # one pass per send_timeout period without progress
                with trio.CancelScope(deadline=trio.current_time() + self.send_timeout) as scope:
                    while total < len(view):
                        await trio.lowlevel.wait_writable(sock)
                        with view[total:] as remaining:
                            sent = self._write(remaining)
                        total += sent
                        if sent and total < len(view):  # full again: time it from here
                            self._queued_mark = unsent_bytes(sock)
                            scope.deadline = trio.current_time() + self.send_timeout
                    return
                if not self._caller_took_enough():
                    self.abort()
                    raise SendTimeout(
                        f"caller took no data for {self.send_timeout}s: connection reset"
                    )

    def _write(self, view: memoryview) -> int:
        """One non-blocking send (``os.write`` on the socket's descriptor: no ``SIGPIPE``
        in Python); 0 when the kernel's buffer is full."""
        try:
            return os.write(self.socket.fileno(), view)
        except BlockingIOError:
            return 0
        except OSError as exc:
            if exc.errno == errno.EBADF:
                raise trio.ClosedResourceError("socket was closed") from None
            raise trio.BrokenResourceError(f"send failed: {exc}") from exc

    def _caller_took_enough(self) -> bool:
        """Progress while no send could go out: since the kernel last took bytes from us, the
        caller acknowledged at least :data:`MIN_PROGRESS_BYTES` of those it holds.  A slow
        reader frees the kernel's buffer in steps too small to make the socket writable (a
        third of a buffer of megabytes), yet it is reading; one taking a byte a second is
        not."""
        queued = unsent_bytes(self.socket)
        mark, self._queued_mark = self._queued_mark, queued
        return mark is None or mark - queued >= MIN_PROGRESS_BYTES

    async def wait_send_all_might_not_block(self) -> None:
        await self.tcp.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.tcp.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        return await self.tcp.receive_some(max_bytes)

    def abort(self) -> None:
        """Close now with RST (``SO_LINGER`` {1, 0}): nothing stays queued in the kernel."""
        self.aborted = True
        if self.socket.fileno() == -1:
            return
        with contextlib.suppress(OSError):
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_ABORT)
        self.socket.close()  # tasks blocked on the socket get ClosedResourceError

    async def aclose(self) -> None:
        live = not self.aborted and self.socket.fileno() != -1
        if self.failed and live and unsent_bytes(self.socket) > 0:
            self.abort()
        await self.tcp.aclose()


def mark_failed(stream: object) -> None:
    """Mark the caller connection under ``stream`` as ending after an error.

    Follows the wrappers a listener puts on a connection (``inner`` of a prefixed stream,
    ``transport_stream`` of TLS) down to the :class:`CallerStream`; anything else (an HTTP/2
    stream: its failure is a stream reset, not the connection's) is left alone.
    """
    for _ in range(8):
        if isinstance(stream, CallerStream):
            stream.failed = True
            return
        nxt = getattr(stream, "inner", None)
        if nxt is None:
            nxt = getattr(stream, "transport_stream", None)
        if nxt is None:
            return
        stream = nxt
