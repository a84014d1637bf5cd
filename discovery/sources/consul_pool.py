"""The idle keep-alive connections of the Consul HTTP client: a bounded, aging stack (sans-IO).

Why a pool at all: under churn the Consul source gets hundreds of blocking-query answers a
second, and each one on a fresh connection costs a getaddrinfo, a TCP connect and a close --
with ``https`` a whole TLS handshake.  Consul's
HTTP API (Go ``net/http``) keeps HTTP/1.1 connections alive, so an answered request hands its
connection back here and the next request takes it.

Decisions only: :class:`IdlePool` never touches a socket.  It returns the connections that
must be closed (too old, over the bound) and the adapter
(:class:`discovery.sources.consul_http.TrioHTTPClient`) closes them.

* Last in, first out: the most recently used connection is the one least likely to have been
  closed by the server, and the ones at the bottom age out instead of being kept warm by
  round-robin use.  Because of that order, once the top one is too old all of them are.
* ``idle_s`` bounds how long a connection may sit unused and still be reused (default
  :data:`IDLE_S`); ``max_idle`` how many are kept (the client's ``max_connections``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

IDLE_S = 20.0
"""How long an unused keep-alive connection may be reused.

Below every idle timeout a connection to Consul is likely to meet: Go's ``http.Transport``
drops its own idle connections after 90 s (``IdleConnTimeout``), load balancers in front of
Consul commonly after 60 s (AWS ELB/ALB's default) and nginx after 75 s
(``keepalive_timeout``).  A connection the server closed sooner anyway is retried once on a
fresh one (GET only), so this bound keeps that retry rare rather than being the only
defence."""

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Idle(Generic[T]):
    """One idle connection and when it was handed back (``trio.current_time()`` seconds)."""

    conn: T
    since: float


class IdlePool(Generic[T]):
    """At most ``max_idle`` idle connections, each reusable for ``idle_s`` after its last use."""

    def __init__(self, max_idle: int, idle_s: float = IDLE_S) -> None:
        if max_idle < 0 or idle_s < 0:
            raise ValueError("max_idle and idle_s must not be negative")
        self.max_idle = max_idle
        self.idle_s = idle_s
        self._stack: deque[Idle[T]] = deque()

    def __len__(self) -> int:
        return len(self._stack)

    def take(self, now: float) -> tuple[T | None, list[T]]:
        """The connection to reuse (None: open one) and the too-old ones to close."""
        if not self._stack:
            return None, []
        top = self._stack.pop()
        if now - top.since <= self.idle_s:
            return top.conn, []
        # LIFO: everything below the top was handed back earlier, so it is too old as well.
        stale = [top.conn, *(idle.conn for idle in self._stack)]
        self._stack.clear()
        return None, stale

    def put(self, conn: T, now: float) -> list[T]:
        """Keep ``conn`` for reuse; returns the connections to close (too old or over the bound)."""
        close = self.expire(now)
        self._stack.append(Idle(conn, now))
        while len(self._stack) > self.max_idle:
            close.append(self._stack.popleft().conn)  # the oldest goes first
        return close

    def expire(self, now: float) -> list[T]:
        """Drop the connections idle for longer than ``idle_s``; returns them, to be closed."""
        close: list[T] = []
        while self._stack and now - self._stack[0].since > self.idle_s:
            close.append(self._stack.popleft().conn)
        return close

    def drain(self) -> list[T]:
        """Empty the pool; returns every idle connection, to be closed."""
        conns = [idle.conn for idle in self._stack]
        self._stack.clear()
        return conns
