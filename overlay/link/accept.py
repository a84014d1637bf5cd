"""``serve_links``: accept peer gateways, verify each per trust domain, hand links to a handler.

Every inbound connection gets the identity state current when it arrives, a bounded TLS
handshake, the per-trust-domain check and the caller's explicit ``authorize(SpiffeId)``.  A
connection that fails any of these is closed and logged (the log record carries the typed error
as ``record.error``), at most once per cause per minute with a count of the suppressed ones
(:class:`~foundation.log_limit.LogLimiter`): a peer whose bundle lost our trust domain may
redial many times a second.  Lines name the configured site a connection comes from when it
can be told (by verified SPIFFE ID, else by source address).  The handler only ever sees
verified, authorized links; its own errors are logged and end that link only, never the
listener.

Worker mode: a worker's listener gets a ``handoff`` hook, run on each TCP connection before
TLS (:mod:`overlay.link.handoff`): a connection it hands to the supervisor is no longer the
listener's business, and the supervisor accepts it with :func:`accept_link_stream`, which
applies exactly the checks and logs of the listener.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Awaitable, Callable

import trio

from foundation.errors import IsthmusError
from foundation.log_limit import LogLimiter
from foundation.spiffe_id import SpiffeId
from overlay.identity.errors import NotAuthorized
from overlay.identity.rotation import Identity
from overlay.identity.verify import Authorizer
from overlay.link.handshake_gate import HandshakeGate
from overlay.link.link import Link, LinkTimeout, handshake
from overlay.link.listen import open_listeners
from overlay.link.socket_opts import tune_relay_socket
from overlay.link.tls_stream import TLSStream

__all__ = ["Handoff", "LinkHandler", "accept_link_stream", "serve_links"]

log = logging.getLogger("isthmus.link")

LinkHandler = Callable[[Link], Awaitable[None]]
#: Which configured site a connection is from, for log lines: (verified ID or None, source IP).
SiteOf = Callable[[SpiffeId | None, str], str | None]
#: Run on each accepted TCP connection before TLS: True when it was handed to another
#: process (and closed here); raises an ``IsthmusError`` to reject it.
Handoff = Callable[[trio.socket.SocketType], Awaitable[bool]]

REJECTION_LOG_WINDOW_S = 60.0  # one line per cause of rejection per minute, at most
#: Rejections of handed-off connections, when the caller passes no limiter of its own.
_HANDOFF_REJECTIONS = LogLimiter(window_s=REJECTION_LOG_WINDOW_S)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _peer_addr(tcp: trio.SocketStream) -> str:
    try:
        host, port = tcp.socket.getpeername()[:2]
    except OSError:
        return "?"
    return f"{host}:{port}"


async def serve_links(
    handler: LinkHandler,
    *,
    host: str,
    port: int,
    identity: Identity,
    authorize: Authorizer,
    handshake_timeout: float = 10.0,
    wall_clock: Callable[[], dt.datetime] = _utcnow,
    site_of: SiteOf | None = None,
    gate: HandshakeGate | None = None,
    handoff: Handoff | None = None,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` (0 picks a port; see ``task_status.started`` listeners).

    ``gate``: at most so many handshakes at once (shared with the gateway's dials); a
    connection waits for a slot within its ``handshake_timeout``, or is closed at once when
    the gate's queue is full (``HandshakeBusy``, logged like any rejection).  ``handoff``
    (worker mode): see the module docstring; a connection it rejects is logged like one that
    failed TLS."""
    listeners = await open_listeners(port, host)
    rejections = LogLimiter(window_s=REJECTION_LOG_WINDOW_S)

    async def on_connection(tcp: trio.SocketStream) -> None:
        if handoff is not None and await _handed_off(tcp, handoff, rejections, site_of):
            return
        await _accept_one(
            tcp,
            handler,
            identity,
            authorize,
            handshake_timeout,
            wall_clock,
            rejections,
            site_of,
            gate,
        )

    await trio.serve_listeners(on_connection, listeners, task_status=task_status)


async def accept_link_stream(
    tcp: trio.SocketStream,
    handler: LinkHandler,
    *,
    identity: Identity,
    authorize: Authorizer,
    handshake_timeout: float = 10.0,
    site_of: SiteOf | None = None,
    gate: HandshakeGate | None = None,
    wall_clock: Callable[[], dt.datetime] = _utcnow,
    rejections: LogLimiter | None = None,
) -> None:
    """Accept one link on a connection that came from elsewhere (a worker's hand-off):
    the TLS handshake, the checks, the logs and the handler of :func:`serve_links`.

    Returns when the link ends; ``tcp`` is closed by then.  ``rejections``: the limiter of
    rejection lines (one per cause per minute), shared by default by every hand-off."""
    await _accept_one(
        tcp,
        handler,
        identity,
        authorize,
        handshake_timeout,
        wall_clock,
        _HANDOFF_REJECTIONS if rejections is None else rejections,
        site_of,
        gate,
    )


def _log_rejection(rejections: LogLimiter, exc: IsthmusError, who: str) -> None:
    rejections.log(
        log,
        logging.WARNING,
        f"{type(exc).__name__}: {exc}",
        "rejected inbound link from %s: %s",
        who,
        exc,
        now=trio.current_time(),
        extra={"error": exc},
    )


async def _handed_off(
    tcp: trio.SocketStream,
    handoff: Handoff,
    rejections: LogLimiter,
    site_of: SiteOf | None,
) -> bool:
    """Run the hand-off hook: True when the connection is gone (handed off or rejected)."""
    try:
        return await handoff(tcp.socket)
    except IsthmusError as exc:
        addr = _peer_addr(tcp)
        site = None if site_of is None else site_of(None, addr.rsplit(":", 1)[0])
        _log_rejection(rejections, exc, addr if site is None else f"site {site} ({addr})")
    except Exception as exc:  # a bug must cost one connection, never the listener
        log.exception("hand-off of an inbound link failed unexpectedly", extra={"error": exc})
    await trio.aclose_forcefully(tcp)
    return True


async def _accept_one(
    tcp: trio.SocketStream,
    handler: LinkHandler,
    identity: Identity,
    authorize: Authorizer,
    handshake_timeout: float,
    wall_clock: Callable[[], dt.datetime],
    rejections: LogLimiter,
    site_of: SiteOf | None = None,
    gate: HandshakeGate | None = None,
) -> None:
    addr = _peer_addr(tcp)

    def who(spiffe_id: SpiffeId | None) -> str:
        site = None if site_of is None else site_of(spiffe_id, addr.rsplit(":", 1)[0])
        return addr if site is None else f"site {site} ({addr})"

    tune_relay_socket(tcp)  # small HTTP/2 frames never wait for Nagle; bulk: no low-water mark
    state = identity.state
    stream = TLSStream(tcp, state.server_ctx, server_side=True)
    try:
        try:
            with trio.fail_after(handshake_timeout):  # the wait for a slot included
                if gate is None:
                    peer = await handshake(stream, state, now=wall_clock())
                else:
                    async with gate.slot():
                        peer = await handshake(stream, state, now=wall_clock())
        except trio.TooSlowError:
            raise LinkTimeout(f"TLS handshake took over {handshake_timeout}s") from None
        if not authorize(peer.spiffe_id):
            raise NotAuthorized(f"peer {peer.spiffe_id} is not authorized to link")
    except IsthmusError as exc:
        _log_rejection(rejections, exc, who(None))
        await trio.aclose_forcefully(stream)
        return
    except Exception as exc:  # a bug must cost one connection, never the listener
        log.exception("inbound link from %s failed unexpectedly", addr, extra={"error": exc})
        await trio.aclose_forcefully(stream)
        return
    link = Link(stream, peer, identity)
    identity.register(link)
    try:
        if link.revoked is None:
            log.debug("inbound link from %s: %s", who(peer.spiffe_id), peer.spiffe_id)
            await handler(link)
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        log.debug("link to %s ended: %r (%s)", peer.spiffe_id, exc, link.revoked or "peer left")
    except Exception as exc:  # the handler's failure ends this link, not the listener
        log.warning("link handler for %s failed: %r", peer.spiffe_id, exc, extra={"error": exc})
    finally:
        await link.aclose()
