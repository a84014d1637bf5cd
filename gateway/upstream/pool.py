"""Connections to local endpoints: dialled on demand, kept alive, reused, reaped when idle.

Why a pool: a TCP connect per request would cost a round trip and a socket per request, and
for HTTP/2 endpoints it would throw away the whole point of multiplexing.  So HTTP/1.1
connections that ended an exchange cleanly are parked per endpoint and reused (most recently
used first: the least likely to have been closed by the backend), and each HTTP/2 endpoint
gets one long-lived connection that carries every concurrent request to it.

Theory of operation
-------------------
* **HTTP/1.1.**  :meth:`UpstreamPool.checkout_h1` pops the newest parked connection of the
  endpoint that is not past ``idle_timeout`` and whose socket has nothing to read (a readable
  idle keep-alive socket means the backend closed it or sent garbage: either way it is
  useless); else it dials.  It returns ``(connection, reused)`` so the caller knows whether
  the stale-connection retry applies.  :meth:`release_h1` parks a connection whose exchange
  completed cleanly, at most ``max_idle_per_endpoint`` per endpoint (the oldest is closed to
  make room).  A race remains -- the backend may close just as we send -- which is why the
  HTTP/1.1 forwarder retries an idempotent, body-less request once on a *new* connection.
* **HTTP/2.**  :meth:`h2_connection` returns the endpoint's live ``H2Connection`` or dials one
  (one dialer at a time per endpoint) and runs it in the nursery :meth:`serve` owns.  A
  connection that is closing (GOAWAY, idle, PING missed, transport gone) is replaced on the
  next request.  HTTP/2 connections close themselves after ``idle_timeout`` without streams.
* **Reaper.**  A task in :meth:`serve` closes parked HTTP/1.1 connections idle past
  ``idle_timeout`` so a quiet endpoint does not keep sockets open forever.

Every connect is bounded (``connect_timeout``) and sets ``TCP_NODELAY`` explicitly.  Errors
while connecting are :class:`EndpointConnectFailed` -- nothing reached the endpoint, so the
request may be retried on another endpoint or site.
"""

from __future__ import annotations

import contextlib
import select
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import trio

from discovery.model import Endpoint, EndpointKey
from gateway.cluster.errors import SiteDidNoWork
from gateway.http.h1_client import H1ClientConnection
from gateway.http.h1_connection import H1Limits
from overlay.h2.connection import H2Connection
from overlay.h2.limits import H2Limits
from overlay.link.socket_opts import tune_relay_socket


class UpstreamUnavailable(SiteDidNoWork):
    """Nothing reached an endpoint (no endpoint, or the connect failed): safe to retry the
    request elsewhere (503)."""

    http_status = 503


class EndpointConnectFailed(UpstreamUnavailable):
    """The TCP connect to an endpoint failed or timed out (503, retryable)."""


@dataclass(frozen=True, slots=True)
class PoolStatistics:
    idle_h1: int
    h2_connections: int
    dialed: int
    reused: int
    discarded_stale: int
    reaped: int


@dataclass(slots=True)
class _Idle:
    conn: H1ClientConnection
    sock: trio.SocketStream
    since: float


def _readable(sock: trio.SocketStream) -> bool:
    """True if an idle socket has something to read (EOF, RST or stray bytes) right now.

    ``poll`` rather than ``select``: ``select`` cannot take descriptors above 1023, which a
    busy gateway has plenty of."""
    try:
        poller = select.poll()
        poller.register(sock.socket.fileno(), select.POLLIN | select.POLLERR | select.POLLHUP)
        return bool(poller.poll(0))
    except (OSError, ValueError):
        return True


def close_now(sock: trio.SocketStream) -> None:
    """Close a socket synchronously (no checkpoint: usable from cleanup paths)."""
    with contextlib.suppress(OSError):
        sock.socket.close()


async def open_tcp(endpoint: Endpoint, *, connect_timeout: float) -> trio.SocketStream:
    """A TCP connection to ``endpoint`` with ``TCP_NODELAY``; raises EndpointConnectFailed."""
    where = f"{endpoint.address}:{endpoint.port}"
    try:
        with trio.fail_after(connect_timeout):
            sock = await trio.open_tcp_stream(endpoint.address, endpoint.port)
    except trio.TooSlowError:
        raise EndpointConnectFailed(
            f"connect to endpoint {where} of {endpoint.service} timed out after "
            f"{connect_timeout:g}s"
        ) from None
    except OSError as exc:
        raise EndpointConnectFailed(
            f"connect to endpoint {where} of {endpoint.service} failed: {exc.strerror or exc}"
        ) from None
    tune_relay_socket(sock)
    return sock


class UpstreamPool:
    """Keep-alive HTTP/1.1 and HTTP/2 connections per endpoint (see the module docstring)."""

    def __init__(
        self,
        *,
        idle_timeout: float = 60.0,
        max_idle_per_endpoint: int = 16,
        h1_limits: H1Limits | None = None,
        h2_limits: H2Limits | None = None,
        h2_ping_interval: float | None = 10.0,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if idle_timeout <= 0:
            raise ValueError("idle_timeout must be positive")
        if max_idle_per_endpoint < 0:
            raise ValueError("max_idle_per_endpoint must be >= 0")
        self.idle_timeout = idle_timeout
        self.max_idle_per_endpoint = max_idle_per_endpoint
        self.h1_limits = h1_limits or H1Limits()
        self.h2_limits = h2_limits or H2Limits()
        self.h2_ping_interval = h2_ping_interval
        self._clock = clock
        self._idle: dict[EndpointKey, deque[_Idle]] = {}
        self._h2: dict[EndpointKey, H2Connection] = {}
        self._h2_dialing: dict[EndpointKey, trio.Lock] = {}
        self._nursery: trio.Nursery | None = None
        self._dialed = self._reused = self._stale = self._reaped = 0

    # -- lifetime ---------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the HTTP/2 connections and the idle reaper until cancelled; then close all."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._reap_loop)
                task_status.started()
        finally:
            self._nursery = None
            for idle in self._idle.values():
                for entry in idle:
                    close_now(entry.sock)
            self._idle.clear()
            self._h2.clear()

    # -- HTTP/1.1 ---------------------------------------------------------------------------

    async def checkout_h1(
        self, endpoint: Endpoint, *, connect_timeout: float
    ) -> tuple[H1ClientConnection, bool]:
        """A usable connection to ``endpoint`` and whether it was reused from the pool."""
        idle = self._idle.get(endpoint.key)
        now = self._clock()
        while idle:
            entry = idle.pop()  # newest first
            if now - entry.since >= self.idle_timeout or _readable(entry.sock):
                self._stale += 1
                close_now(entry.sock)
                continue
            self._reused += 1
            entry.conn.start_next()
            return entry.conn, True
        return await self.connect_h1(endpoint, connect_timeout=connect_timeout), False

    async def connect_h1(self, endpoint: Endpoint, *, connect_timeout: float) -> H1ClientConnection:
        """A new HTTP/1.1 connection to ``endpoint`` (never from the pool)."""
        sock = await open_tcp(endpoint, connect_timeout=connect_timeout)
        self._dialed += 1
        return H1ClientConnection(sock, self.h1_limits)

    def release_h1(self, endpoint: Endpoint, conn: H1ClientConnection) -> None:
        """Park ``conn`` if its last exchange ended cleanly; otherwise close it."""
        sock = conn.stream
        assert isinstance(sock, trio.SocketStream)
        if not conn.reusable or self._nursery is None or self.max_idle_per_endpoint == 0:
            close_now(sock)
            return
        idle = self._idle.setdefault(endpoint.key, deque())
        while len(idle) >= self.max_idle_per_endpoint:
            close_now(idle.popleft().sock)
        idle.append(_Idle(conn, sock, self._clock()))

    @staticmethod
    def discard_h1(conn: H1ClientConnection) -> None:
        """Close a connection that must not be reused (error, unfinished exchange)."""
        sock = conn.stream
        if isinstance(sock, trio.SocketStream):
            close_now(sock)

    # -- HTTP/2 -----------------------------------------------------------------------------

    async def h2_connection(
        self, endpoint: Endpoint, *, connect_timeout: float, fresh: bool = False
    ) -> H2Connection:
        """The endpoint's live HTTP/2 connection, dialled if needed (``fresh``: a new one)."""
        key = endpoint.key
        conn = self._h2.get(key)
        if conn is not None and not conn.is_closing and not fresh:
            return conn
        lock = self._h2_dialing.setdefault(key, trio.Lock())
        async with lock:
            current = self._h2.get(key)
            if current is not None and not current.is_closing and current is not conn:
                return current  # another request dialled while we waited
            nursery = self._nursery
            if nursery is None:
                raise RuntimeError("UpstreamPool.serve() is not running")
            sock = await open_tcp(endpoint, connect_timeout=connect_timeout)
            self._dialed += 1
            new = H2Connection(
                sock,
                client_side=True,
                limits=self.h2_limits,
                ping_interval=self.h2_ping_interval,
                idle_timeout=self.idle_timeout,
            )
            await nursery.start(self._run_h2, key, new)
            self._h2[key] = new
            return new

    async def _run_h2(
        self,
        key: EndpointKey,
        conn: H2Connection,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        try:
            await conn.serve(task_status=task_status)
        finally:
            if self._h2.get(key) is conn:
                del self._h2[key]
                self._h2_dialing.pop(key, None)

    # -- housekeeping -----------------------------------------------------------------------

    async def _reap_loop(self) -> None:
        period = max(self.idle_timeout / 4, 0.05)
        while True:
            await trio.sleep(period)
            self.reap()

    def reap(self) -> int:
        """Close parked connections idle past ``idle_timeout``; return how many."""
        cutoff = self._clock() - self.idle_timeout
        closed = 0
        for key in list(self._idle):
            idle = self._idle[key]
            while idle and idle[0].since <= cutoff:
                close_now(idle.popleft().sock)
                closed += 1
            if not idle:
                del self._idle[key]
        self._reaped += closed
        return closed

    def statistics(self) -> PoolStatistics:
        return PoolStatistics(
            idle_h1=sum(len(d) for d in self._idle.values()),
            h2_connections=len(self._h2),
            dialed=self._dialed,
            reused=self._reused,
            discarded_stale=self._stale,
            reaped=self._reaped,
        )
