"""A link session: one verified mTLS link carrying HTTP/2 in *both* directions.

Why: HTTP/2 streams are opened by the client only, and the client is whoever dialed.  A site
behind NAT can only dial out, yet its peers must be able to send it traffic and their catalog
export.  So every link carries two HTTP/2 connections:

* the **outer** connection on the TLS stream: the dialer is its client;
* a **reverse** connection inside one CONNECT stream (``:authority`` = :data:`REVERSE_AUTHORITY`)
  that the dialer opens right after the preface: the acceptor is *its* client.

Each side therefore ends up with exactly one client-role connection towards the peer
(:attr:`LinkSession.client`) and serves the peer's streams with the same handler, whichever
side dialed.  Liveness (HTTP/2 PING with a deadline) runs on the outer connection only; the
reverse connection lives and dies with the CONNECT stream that carries it.

Theory of operation
-------------------
``run()`` owns a nursery with the outer connection, the reverse connection and nothing else.
It calls ``task_status.started(client)`` once both connections are up (the dialer waits for
the acceptor's 200 on the reverse stream; the acceptor waits for the reverse stream to arrive,
bounded by ``setup_timeout``) and returns when the outer connection closes, for whatever
reason -- PING deadline missed, peer gone, link revoked by rotation, local ``aclose()``.  The
returned :class:`~overlay.h2.stream.ConnectionGone` says why.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace

import trio

from foundation.errors import H2_PROTOCOL_ERROR, H2_REFUSED_STREAM
from overlay.h2.connection import H2Connection
from overlay.h2.limits import EngineName, H2Limits
from overlay.h2.stream import ConnectionGone, H2Stream, TunnelError
from overlay.link.link import Link

log = logging.getLogger("isthmus.link")

#: The CONNECT target of the reverse connection.  ``.invalid`` (RFC 6761) can never be a real
#: service's L7 address, so a tunnel request cannot be mistaken for it.
REVERSE_AUTHORITY = "reverse.isthmus.invalid:1"
#: Sent on the reverse CONNECT of an *extra* link (a second or later link the dialer opened to
#: the same peer for more stream slots): the acceptor keeps it beside the peer's primary link
#: instead of taking it for a newer primary (see :mod:`overlay.peering.pool`).
EXTRA_LINK_HEADER = (b"isthmus-link", b"extra")
#: Sent instead by a *worker link* (a worker process's own link to a peer, see
#: docs/worker-links.md): the acceptor keeps it as a *pinned* extra link -- streams only, no
#: federation or control stream, never promoted to a primary slot.
WORKER_LINK_HEADER = (b"isthmus-link", b"worker")
SETUP_TIMEOUT_S = 10.0
#: The protocol engine of a link whose limits name none (``[limits] link_h2_engine``).
LINK_ENGINE: EngineName = "lean"

StreamHandler = Callable[[H2Stream], Awaitable[None]]


class _Carrier(trio.abc.Stream):
    """An :class:`H2Stream` as the transport of the reverse connection.

    ``H2Stream`` reports a dead stream with typed tunnel errors; an ``H2Connection`` expects
    its transport to fail like a socket (``trio.BrokenResourceError``).  This adapter
    translates, so the reverse connection ends quietly when its carrier stream dies.
    """

    def __init__(self, stream: H2Stream) -> None:
        self.stream = stream

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        try:
            await self.stream.send_all(data)
        except TunnelError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        try:
            return await self.stream.receive_some(max_bytes)
        except TunnelError as exc:
            raise trio.BrokenResourceError(str(exc)) from exc

    async def aclose(self) -> None:
        await self.stream.aclose()


class LinkSetupFailed(ConnectionGone):
    """The reverse connection did not come up in time (or the peer refused it)."""


def _is_reverse_request(stream: H2Stream) -> bool:
    headers = dict(stream.request_headers)
    return headers.get(b":method") == b"CONNECT" and (
        headers.get(b":authority") == REVERSE_AUTHORITY.encode()
    )


class LinkSession:
    """Both HTTP/2 connections of one link; see the module docstring."""

    def __init__(
        self,
        link: Link,
        *,
        dialed: bool,
        handler: StreamHandler,
        limits: H2Limits | None = None,
        ping_interval: float | None = 10.0,
        ping_timeout: float = 5.0,
        first_ping_timeout: float | None = None,
        setup_timeout: float = SETUP_TIMEOUT_S,
        extra: bool = False,
        pinned: bool = False,
        accept_extra: Callable[[], bool] | None = None,
    ) -> None:
        self.link = link
        self.dialed = dialed
        #: A worker link (the dialer says so; the acceptor learns it at set-up, or is told so
        #: when it is a worker itself, whose every link is one).  Pinned implies extra.
        self.pinned = pinned
        #: An extra link of a pool (the dialer says so; the acceptor learns it at set-up).
        self.extra = extra or pinned
        #: Acceptor: may the peer have one more extra link now?  (None: always.)
        self._accept_extra = accept_extra
        self._handler = handler
        # Every link carries WebSocket as RFC 8441 extended CONNECT: both server-role
        # connections (outer on the acceptor, reversed on the dialer) advertise it.  A reset
        # the peer forwards for one of its callers is normal traffic, never the peer's abuse:
        # the origin gateway holds each caller to its own reset budget.
        # Both ends are Isthmus gateways: the lean engine unless the limits name one.
        limits = limits or H2Limits()
        limits = replace(
            limits,
            enable_connect_protocol=True,
            count_peer_resets=False,
            engine=limits.engine or LINK_ENGINE,
        )
        self._limits = limits
        self._setup_timeout = setup_timeout
        self._reverse_seen = False
        self._pinging = ping_interval is not None
        self._client: H2Connection | None = None
        #: The reverse connection, once set up (for statistics: a link is both connections).
        self.reverse: H2Connection | None = None
        self._client_ready = trio.Event()
        if dialed:
            self.outer = H2Connection(
                link.stream,
                client_side=True,
                limits=limits,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                ping_at_once=True,
                first_ping_timeout=first_ping_timeout,
            )
        else:
            self.outer = H2Connection(
                link.stream,
                client_side=False,
                handler=self._accept_stream,
                limits=limits,
                ping_interval=ping_interval,
                ping_timeout=ping_timeout,
                ping_at_once=True,
                first_ping_timeout=first_ping_timeout,
            )

    @property
    def client(self) -> H2Connection | None:
        """This side's client-role connection to the peer (None until set up)."""
        return self._client

    @property
    def established(self) -> bool:
        """Set up (peer verified, both connections up) and our first PING answered.

        Only an established link proves the peer accepts us: under TLS 1.3 a server rejects
        our certificate after our side of the handshake completed.  Without liveness
        (``ping_interval=None``, tests) set-up alone counts.
        """
        return self._client is not None and (not self._pinging or self.outer.ping_answered)

    async def run(
        self, *, task_status: trio.TaskStatus[H2Connection] = trio.TASK_STATUS_IGNORED
    ) -> ConnectionGone:
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(self.outer.serve)
                nursery.start_soon(self._close_link_when_outer_closes, nursery)
                try:
                    with trio.fail_after(self._setup_timeout):
                        if self.dialed:
                            await self._open_reverse(nursery)
                            self._client = self.outer
                            self._client_ready.set()
                        else:
                            await self._client_ready.wait()
                except trio.TooSlowError:
                    await self.outer.aclose(H2_PROTOCOL_ERROR)
                    raise LinkSetupFailed("peer did not set up the reverse connection") from None
                assert self._client is not None
                task_status.started(self._client)
        finally:
            with trio.CancelScope(shield=True):
                await self.link.aclose()
        reason = self.outer.close_reason
        if self._client is None:  # closed during set-up (e.g. the acceptor refused it)
            raise LinkSetupFailed(f"link closed during set-up: {reason}")
        return reason if reason is not None else ConnectionGone("link closed")

    async def aclose(self) -> None:
        await self.outer.aclose()

    async def _close_link_when_outer_closes(self, nursery: trio.Nursery) -> None:
        reason = await self.outer.wait_closed()
        log.debug("link to %s closed: %s", self.link.peer_id, reason)
        nursery.cancel_scope.cancel()

    async def _open_reverse(self, nursery: trio.Nursery) -> None:
        request = [(b":method", b"CONNECT"), (b":authority", REVERSE_AUTHORITY.encode())]
        if self.pinned:
            request.append(WORKER_LINK_HEADER)
        elif self.extra:
            request.append(EXTRA_LINK_HEADER)
        carrier = await self.outer.open_stream(request)
        headers = dict(await carrier.response_headers())
        if headers.get(b":status") != b"200":
            raise LinkSetupFailed(f"peer refused the reverse connection: {headers!r}")
        reverse = H2Connection(
            _Carrier(carrier),
            client_side=False,
            handler=self._handler,
            limits=self._limits,
            ping_interval=None,
        )
        self.reverse = reverse
        await nursery.start(reverse.serve)

    async def _accept_stream(self, stream: H2Stream) -> None:
        if not _is_reverse_request(stream):
            await self._handler(stream)
            return
        if self._reverse_seen:  # one reverse connection per link, ever
            stream.reset(H2_REFUSED_STREAM)
            return
        self._reverse_seen = True
        self.pinned = self.pinned or WORKER_LINK_HEADER in stream.request_headers
        self.extra = self.pinned or EXTRA_LINK_HEADER in stream.request_headers
        if self.extra and self._accept_extra is not None and not self._accept_extra():
            stream.reset(H2_REFUSED_STREAM)  # the dialer's set-up fails; it backs off
            return
        await stream.send_headers([(":status", "200")])
        reverse = H2Connection(
            _Carrier(stream), client_side=True, limits=self._limits, ping_interval=None
        )
        self.reverse = reverse
        async with trio.open_nursery() as nursery:
            await nursery.start(reverse.serve)
            self._client = reverse
            self._client_ready.set()
