"""The accept loop every downstream listener shares: bounded connections, isolated failures.

Theory of operation
-------------------
One task per listening socket accepts; each accepted connection runs its handler in the
listener's nursery.  A counter shared by all sockets of the listener holds the number of live
connections.  At ``max_connections`` a new connection is still *accepted* -- leaving it in the
kernel's backlog would make the caller wait for a timeout -- and closed at once with a TCP RST
(``SO_LINGER`` 0), so an excess caller learns within a round trip that it was refused while
the connections already open are not touched.  A handler's own failure is logged and ends
that connection only, never the listener.  Running out of file descriptors (``EMFILE``...) is
a capacity problem, not a crash: the loop pauses briefly and accepts again (as trio's
``serve_listeners`` does).

Every accepted socket reaches its handler as a
:class:`~gateway.listener.caller_stream.CallerStream`: sends to the caller are bounded by
``send_timeout`` (no progress -> RST), and a connection that ends after an error is closed
abortively when the kernel still holds data for the caller.

With a :class:`~gateway.listener.drain.Drain`, every connection is counted in it while it is
open, and when the drain begins the accept loops end and the listening sockets close (the
connections already accepted run on: the drain waits for them); the drain knows when the
sockets are closed (:meth:`~gateway.listener.drain.Drain.wait_closed`), so a reload can bind
a replacement on the same address right after.
"""

from __future__ import annotations

import contextlib
import contextvars
import errno
import logging
import math
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import trio

from foundation.spiffe_id import SpiffeId
from gateway.config.model import LimitsConfig
from gateway.http.exchange import CallContext
from gateway.listener.caller_stream import CallerStream
from overlay.link.listen import open_listeners
from overlay.link.socket_opts import tune_relay_socket

if TYPE_CHECKING:
    from gateway.listener.drain import Drain

log = logging.getLogger("isthmus.listener")

ConnectionHandler = Callable[[CallerStream], Awaitable[None]]

#: The address of the downstream connection the current task serves: set for each accepted
#: connection, inherited by every task it starts, read by :func:`call_context` (a caller's
#: fair share of a peer's link slots is keyed on it when it has no SPIFFE ID).
DOWNSTREAM_ADDRESS: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "isthmus_downstream_address", default=None
)

_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOBUFS})
_CAPACITY_SLEEP_S = 0.1


class ConnectionCap:
    """Live-connection accounting for one listener (all its sockets)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self.accepted = 0
        self.refused = 0

    def statistics(self) -> dict[str, int]:
        return {
            "active": self.active,
            "limit": self.limit,
            "accepted": self.accepted,
            "refused": self.refused,
        }


def _refuse(stream: trio.SocketStream) -> None:
    """Close with RST: the caller is told at once, and no TIME_WAIT is left behind."""
    sock = stream.socket
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def _run(
    handler: ConnectionHandler, stream: CallerStream, cap: ConnectionCap, drain: Drain | None
) -> None:
    with contextlib.suppress(OSError):  # (a socket the caller already reset has no peer)
        DOWNSTREAM_ADDRESS.set(str(stream.socket.getpeername()[0]))
    try:
        if drain is None:
            await handler(stream)
        else:
            with drain.connection():
                await handler(stream)
    except* Exception:  # a bug must cost this connection, never the listener
        # ``except*``: errors that come in a group with the Cancelled of a listener being
        # shut down are handled here; the Cancelled part goes on to its cancel scope.
        stream.failed = True
        log.exception("connection handler failed")
    finally:
        cap.active -= 1
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(stream)


async def _accept_loop(
    listener: trio.SocketListener,
    handler: ConnectionHandler,
    cap: ConnectionCap,
    nursery: trio.Nursery,
    send_timeout: float,
    drain: Drain | None,
) -> None:
    while True:
        try:
            stream = await listener.accept()
        except OSError as exc:
            if exc.errno not in _CAPACITY_ERRNOS:
                raise
            log.error("accept failed (%s): pausing %.1fs", errno.errorcode[exc.errno], 0.1)
            await trio.sleep(_CAPACITY_SLEEP_S)
            continue
        if cap.active >= cap.limit:
            cap.refused += 1
            _refuse(stream)
            continue
        tune_relay_socket(stream)
        cap.active += 1
        cap.accepted += 1
        caller = CallerStream(stream, send_timeout=send_timeout)
        nursery.start_soon(_run, handler, caller, cap, drain)


async def _stop_accepting(drain: Drain, accepting: trio.CancelScope) -> None:
    await drain.wait_begun()
    accepting.cancel()


async def serve_tcp(
    handler: ConnectionHandler,
    *,
    host: str,
    port: int,
    max_connections: int,
    send_timeout: float,
    cap: ConnectionCap | None = None,
    drain: Drain | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Accept on ``host:port`` (0 picks one; ``started`` gets the bound port) until cancelled,
    running ``handler`` per connection, at most ``max_connections`` at a time; a caller that
    takes no sent byte for ``send_timeout`` seconds is reset.  ``drain``: see the module
    docstring (after it began this serves the open connections until cancelled)."""
    cap = cap if cap is not None else ConnectionCap(max_connections)
    listeners = await open_listeners(port, host)
    accepting_held = contextlib.nullcontext() if drain is None else drain.accepting()
    try:
        async with trio.open_nursery() as nursery:
            with accepting_held:  # until the sockets are closed: a replacement may bind then
                try:
                    async with trio.open_nursery() as accepting:
                        for listener in listeners:
                            accepting.start_soon(
                                _accept_loop, listener, handler, cap, nursery, send_timeout, drain
                            )
                        if drain is not None:
                            accepting.start_soon(_stop_accepting, drain, accepting.cancel_scope)
                        task_status.started(listeners[0].socket.getsockname()[1])
                finally:
                    # Only a drain (or a cancellation) ends the accept loops: refuse new
                    # callers from here on.
                    await _close_all(listeners)
            await trio.sleep_forever()
    finally:
        await _close_all(listeners)


async def _close_all(listeners: list[trio.SocketListener]) -> None:
    with trio.CancelScope(shield=True):
        for listener in listeners:
            await listener.aclose()


def call_context(
    limits: LimitsConfig, local_site: str, caller_id: SpiffeId | None = None
) -> CallContext:
    """The context of a request or flow a local caller starts now: the route timeout to the
    response head, then the stream limits (:mod:`gateway.http.exchange_timer`)."""
    now = trio.current_time()
    # Built in one call (with_stream_limits' dataclasses.replace cost ~2 us per request).
    max_duration = limits.max_stream_duration_s
    return CallContext(
        local_site,
        caller_id,
        now + limits.route_timeout_s,
        idle_timeout=limits.stream_idle_timeout_s,
        max_deadline=math.inf if max_duration is None else now + max_duration,
        caller_address=DOWNSTREAM_ADDRESS.get(),
    )
