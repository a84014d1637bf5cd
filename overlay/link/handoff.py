"""The east-west hand-off: a worker keeps its own worker links and passes every other
connection, still untouched, to the supervisor.

Why: in worker mode every worker accepts on the east-west port (``SO_REUSEPORT``), but only
links dialed by a peer's *workers* belong there (streams only).  A link from a peer's
supervisor, a ``workers = 0`` gateway or an older version carries federation and must reach
this site's supervisor, which runs today's accept path.  The two kinds are told apart before
TLS, by the SNI of the ClientHello: worker links ask for :data:`WORKER_LINK_SNI`, nothing else
does (gateways dial without SNI; ``.invalid`` can never be a real name, RFC 2606).  The SNI
is only a sorting label, never a credential: both paths run the full mTLS verification.

Theory of operation
-------------------
``is_worker_link`` reads the ClientHello with ``MSG_PEEK``, so not one byte is consumed: the
TLS handshake that follows -- here or in the supervisor -- reads the hello from the socket as
if nobody had looked.  A hello split over several TCP segments is peeked again when more
bytes arrive: ``SO_RCVLOWAT`` is set to one byte more than already seen, so the socket only
turns readable on progress (no busy loop over the same bytes), and restored to 1 before the
socket goes on.  Readable without progress means the peer closed inside the hello.  Bounded
by ``max_bytes`` and ``timeout_s``; garbage, a truncated or too large hello and a timeout
raise the typed ``ClientHelloError``s, and the listener closes and logs the connection like
any rejected link.  A complete hello without our SNI (none, another name) is not an error:
it goes to the supervisor.

``hand_off`` sends the socket's fd over a Unix datagram socket with ``SCM_RIGHTS`` (the
kernel duplicates it into the supervisor) and closes the worker's copy.
``receive_handoffs`` is the supervisor's end: each fd received becomes a
``trio.SocketStream`` served by ``on_connection`` (the lead passes
:func:`overlay.link.accept.accept_link_stream`), at most ``max_connections`` at once -- more
are closed with a RST at once, as a listener refuses connections over its cap.
"""

from __future__ import annotations

import array
import contextlib
import logging
import socket
import struct
from collections.abc import Awaitable, Callable

import trio

from foundation.errors import IsthmusError
from foundation.log_limit import LogLimiter
from overlay.link.client_hello import (
    CLIENT_HELLO_TIMEOUT_S,
    MAX_CLIENT_HELLO_BYTES,
    ClientHelloReader,
    ClientHelloTimeout,
    InvalidSni,
    NoSni,
    TruncatedClientHello,
)

__all__ = [
    "HANDOFF_MESSAGE",
    "MAX_HANDOFF_CONNECTIONS",
    "WORKER_LINK_SNI",
    "HandoffBusy",
    "HandoffFailed",
    "HandoffStats",
    "hand_off",
    "is_worker_link",
    "receive_handoffs",
    "worker_handoff",
]

log = logging.getLogger("isthmus.link")

#: The TLS SNI a worker dials peers with; any other hello (or none) goes to the supervisor.
WORKER_LINK_SNI = "worker-link.isthmus.invalid"
#: The payload of every hand-off datagram (its fd travels in the ancillary data).
HANDOFF_MESSAGE = b"isthmus-handoff/1"
#: Handed-off connections a supervisor serves at once (links of peers' supervisors and
#: single-process gateways: a few per peer site), unless told otherwise.
MAX_HANDOFF_CONNECTIONS = 4096
#: How long a worker waits for the supervisor to take a connection (its queue is full).
HANDOFF_SEND_TIMEOUT_S = 5.0
#: ClientHellos a worker waits for at once; more connections are refused at once.
MAX_PENDING_HELLOS = 1024

#: hand_off sends one fd; room for a few more, so that extras are received and closed.
_ANCILLARY_BYTES = socket.CMSG_SPACE(8 * array.array("i").itemsize)
_LOG_WINDOW_S = 60.0


class HandoffFailed(IsthmusError):
    """The supervisor did not take a connection (gone, or its queue stayed full)."""

    http_status = 503


class HandoffBusy(HandoffFailed):
    """Too many connections are waiting for their ClientHello already: this one is refused."""


async def is_worker_link(
    sock: trio.socket.SocketType,
    *,
    timeout_s: float = CLIENT_HELLO_TIMEOUT_S,
    max_bytes: int = MAX_CLIENT_HELLO_BYTES,
) -> bool:
    """Whether the ClientHello waiting on ``sock`` asks for :data:`WORKER_LINK_SNI`.

    Consumes nothing (``MSG_PEEK``).  False for a complete hello with any other SNI or none.
    Raises ``ClientHelloTimeout`` after ``timeout_s``, ``TruncatedClientHello`` when the peer
    closes or resets inside the hello, and ``NotTls``/``MalformedClientHello``/
    ``ClientHelloTooLarge`` for what is not a ClientHello of at most ``max_bytes``."""
    reader = ClientHelloReader(max_bytes=max_bytes)
    seen = 0
    try:
        with trio.move_on_after(timeout_s):
            while True:
                if seen:
                    # Readable again only once more than ``seen`` bytes wait (or at EOF).
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, seen + 1)
                    await trio.lowlevel.wait_readable(sock)
                try:
                    data = await sock.recv(max_bytes, socket.MSG_PEEK)
                except OSError as exc:  # reset by the peer
                    raise TruncatedClientHello(
                        f"connection failed inside the ClientHello: {exc}"
                    ) from exc
                if len(data) <= seen:
                    raise TruncatedClientHello("connection closed inside the ClientHello")
                try:
                    sni = reader.feed(data[seen:])
                except (NoSni, InvalidSni):
                    return False  # a whole, well-formed hello: just not a worker link
                seen = len(data)
                if sni is not None:
                    return sni == WORKER_LINK_SNI
        raise ClientHelloTimeout(f"no complete ClientHello within {timeout_s} s")
    finally:
        if seen:
            with contextlib.suppress(OSError):  # the TLS reader after us wants every byte
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, 1)


async def hand_off(dgram: trio.socket.SocketType, sock: trio.socket.SocketType) -> None:
    """Send ``sock``'s fd to the supervisor over ``dgram`` (``SCM_RIGHTS``), then close our
    copy, sent or not.  Waits while the supervisor's queue is full (the caller bounds it);
    ``OSError`` if the other end is gone."""
    try:
        fds = array.array("i", [sock.fileno()])
        await dgram.sendmsg(
            [HANDOFF_MESSAGE], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())]
        )
    finally:
        sock.close()


def worker_handoff(
    dgram: trio.socket.SocketType,
    *,
    timeout_s: float = CLIENT_HELLO_TIMEOUT_S,
    max_bytes: int = MAX_CLIENT_HELLO_BYTES,
    send_timeout_s: float = HANDOFF_SEND_TIMEOUT_S,
    max_pending: int = MAX_PENDING_HELLOS,
) -> Callable[[trio.socket.SocketType], Awaitable[bool]]:
    """The ``handoff`` hook of a worker's ``serve_links``: False keeps a worker link here,
    True means the connection went to the supervisor.  A ClientHello error or a failed
    hand-off raises (a typed ``IsthmusError``): the listener closes and logs the connection.

    ``timeout_s`` bounds the wait for the ClientHello (then the link's own handshake timeout
    runs); ``max_pending`` bounds the connections waiting for theirs: the peek comes before
    the handshake gate, so without it connections that send nothing would pile up."""
    pending = trio.CapacityLimiter(max_pending)

    async def handoff(sock: trio.socket.SocketType) -> bool:
        token = object()
        try:
            pending.acquire_on_behalf_of_nowait(token)
        except trio.WouldBlock:
            raise HandoffBusy(
                f"{max_pending} connections wait for their ClientHello already: refused"
            ) from None
        try:
            worker = await is_worker_link(sock, timeout_s=timeout_s, max_bytes=max_bytes)
        finally:
            pending.release_on_behalf_of(token)
        if worker:
            return False
        try:
            with trio.fail_after(send_timeout_s):
                await hand_off(dgram, sock)
        except trio.TooSlowError:
            raise HandoffFailed(
                f"the supervisor took no connection within {send_timeout_s} s"
            ) from None
        except OSError as exc:
            raise HandoffFailed(f"cannot hand the connection to the supervisor: {exc}") from exc
        return True

    return handoff


class HandoffStats:
    """What a supervisor's ``receive_handoffs`` did (shared by all its workers' channels)."""

    def __init__(self) -> None:
        self.received = 0
        self.refused = 0  # over max_connections: closed at once
        self.invalid = 0  # not a TCP socket, bad message, truncated ancillary data
        self.active = 0

    def statistics(self) -> dict[str, int]:
        return {
            "received": self.received,
            "refused": self.refused,
            "invalid": self.invalid,
            "active": self.active,
        }


def _received_fds(ancdata: list[tuple[int, int, bytes]]) -> list[int]:
    fds = array.array("i")
    for level, kind, data in ancdata:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - len(data) % fds.itemsize])
    return list(fds)


def _tcp_socket(fd: int) -> socket.socket | None:
    """The stream socket behind a received fd, or None (and the fd closed)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError:
        with contextlib.suppress(OSError):
            socket.close(fd)
        return None
    if sock.family not in (socket.AF_INET, socket.AF_INET6) or sock.type != socket.SOCK_STREAM:
        sock.close()
        return None
    return sock


def _refuse(sock: socket.socket) -> None:
    """Close with RST: the peer learns at once and redials (with its backoff)."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def receive_handoffs(
    dgram: trio.socket.SocketType,
    on_connection: Callable[[trio.SocketStream], Awaitable[None]],
    *,
    max_connections: int = MAX_HANDOFF_CONNECTIONS,
    slots: trio.CapacityLimiter | None = None,
    stats: HandoffStats | None = None,
    handler_nursery: trio.Nursery | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve every connection a worker hands over on ``dgram`` until cancelled.

    ``slots``: share one limiter between the receivers of all workers (else one of
    ``max_connections`` for this receiver).  ``handler_nursery``: where the connections run;
    pass the supervisor's own so that cancelling this receiver (its worker was replaced, and
    a datagram socket reports no EOF when the worker dies) leaves the links it handed over
    alone.  ``on_connection`` owns the stream; it is closed after it returns or fails."""
    limiter = slots if slots is not None else trio.CapacityLimiter(max_connections)
    counts = stats if stats is not None else HandoffStats()
    complaints = LogLimiter(window_s=_LOG_WINDOW_S)

    def complain(cause: str, message: str, *args: object) -> None:
        complaints.log(log, logging.WARNING, cause, message, *args, now=trio.current_time())

    async def serve(stream: trio.SocketStream, token: object) -> None:
        try:
            await on_connection(stream)
        except Exception as exc:  # a bug costs this connection, never the receiver
            log.exception("handed-off connection failed unexpectedly", extra={"error": exc})
        finally:
            counts.active -= 1
            limiter.release_on_behalf_of(token)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(stream)

    async def receive_loop(nursery: trio.Nursery) -> None:
        while True:
            message, ancdata, flags, _ = await dgram.recvmsg(
                len(HANDOFF_MESSAGE) + 1, _ANCILLARY_BYTES
            )
            sockets = [s for s in map(_tcp_socket, _received_fds(ancdata)) if s is not None]
            if message != HANDOFF_MESSAGE or flags & socket.MSG_CTRUNC or len(sockets) != 1:
                counts.invalid += 1
                complain("invalid", "invalid hand-off datagram (%d sockets): dropped", len(sockets))
                for sock in sockets:
                    _refuse(sock)
                continue
            [sock] = sockets
            counts.received += 1
            token = object()
            try:
                limiter.acquire_on_behalf_of_nowait(token)
            except trio.WouldBlock:
                counts.refused += 1
                complain(
                    "full",
                    "refused a handed-off connection: %d of %d in use",
                    limiter.borrowed_tokens,
                    limiter.total_tokens,
                )
                _refuse(sock)
                continue
            counts.active += 1
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(sock))
            nursery.start_soon(serve, stream, token)

    if handler_nursery is not None:
        task_status.started()
        await receive_loop(handler_nursery)
        return
    async with trio.open_nursery() as nursery:
        task_status.started()
        await receive_loop(nursery)
