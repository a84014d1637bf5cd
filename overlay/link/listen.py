"""``open_listeners``: the one place every listening socket of the gateway is bound.

Why: in worker mode several processes (the workers) accept on the same ports, which Linux
allows only when every socket of the group sets ``SO_REUSEPORT`` before ``bind``; the kernel
then spreads new connections over the group's listening sockets.  ``trio.open_tcp_listeners``
has no such option, so the east-west listener, the caller listeners (http, sni, service
ports) and the admin API all bind here instead, and a worker turns the option on once for the
whole process (:func:`set_reuse_port`).  A process that never calls it -- ``workers = 0``, the
supervisor -- binds exactly as trio does: a second gateway started by mistake on the same
port still fails with "address already in use".

Port 0 in worker mode: each worker binding port 0 would get a different port, so the
supervisor resolves it once with :func:`reserve_port` (a bound socket in the reuse group that
never listens, so it is never handed a connection) and tells the workers the real port.

The kernel only lets sockets of the same effective user share a port this way, so another
user's process cannot join the group and receive our connections.
"""

from __future__ import annotations

import errno
import socket

import trio

__all__ = ["open_listeners", "reserve_port", "reuse_port_enabled", "set_reuse_port"]

#: Listen backlog: what trio picks by default (the kernel caps it at ``somaxconn``).
BACKLOG = 0xFFFF

_REUSE_PORT = getattr(socket, "SO_REUSEPORT", None)
_reuse_port = False


def set_reuse_port(enabled: bool) -> None:
    """Make every later :func:`open_listeners` of this process set ``SO_REUSEPORT`` (or not).

    Process-wide on purpose: a worker decides once at start-up, and every listener it starts
    afterwards (whichever module starts it) joins the port's group.  Listeners already bound
    keep what they had."""
    if enabled and _REUSE_PORT is None:
        raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not supported on this platform")
    global _reuse_port
    _reuse_port = enabled


def reuse_port_enabled() -> bool:
    """Whether :func:`open_listeners` sets ``SO_REUSEPORT`` in this process now."""
    return _reuse_port


def _prepare(
    sock: socket.socket | trio.socket.SocketType,
    family: int,
    *,
    reuse_addr: bool = True,
    reuse_port: bool,
) -> None:
    """The options trio sets (``SO_REUSEADDR``, v6-only) plus ``SO_REUSEPORT`` if asked."""
    if reuse_addr:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        assert _REUSE_PORT is not None  # set_reuse_port / reserve_port checked
        sock.setsockopt(socket.SOL_SOCKET, _REUSE_PORT, 1)
    if family == socket.AF_INET6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)


async def open_listeners(port: int, host: str) -> list[trio.SocketListener]:
    """Listening sockets on ``host:port``, one per address ``host`` resolves to.

    Same contract as ``trio.open_tcp_listeners(port, host=host)`` (``OSError`` on a failed
    bind, which :mod:`gateway.listener.bind` turns into a message naming the listener), plus
    ``SO_REUSEPORT`` when :func:`set_reuse_port` turned it on."""
    reuse_port = _reuse_port
    addresses = await trio.socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    unsupported: list[OSError] = []
    try:
        for family, type_, proto, _, sockaddr in addresses:
            try:
                sock = trio.socket.socket(family, type_, proto)
            except OSError as exc:
                if exc.errno == errno.EAFNOSUPPORT:
                    unsupported.append(exc)
                    continue
                raise
            try:
                _prepare(sock, family, reuse_port=reuse_port)
                await sock.bind(sockaddr)
                sock.listen(BACKLOG)
                listeners.append(trio.SocketListener(sock))
            except BaseException:
                sock.close()
                raise
    except BaseException:
        for listener in listeners:
            listener.socket.close()
        raise
    if not listeners:
        if unsupported:
            raise OSError(errno.EAFNOSUPPORT, f"no usable address family for {host!r}")
        raise OSError(errno.EADDRNOTAVAIL, f"{host!r} resolves to no address")
    return listeners


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT``, not listening: port 0 resolved.

    The caller keeps it open for as long as the port must stay reserved (its workers bind the
    same port with :func:`open_listeners` after ``set_reuse_port(True)``) and reads the port
    from ``getsockname()``.  A socket that does not listen never receives a connection, so
    holding it costs nothing but the reservation.  It has no ``SO_REUSEADDR``: with it, Linux
    would let any socket that sets only ``SO_REUSEADDR`` (every trio listener) bind the port
    while no one listens on it yet, and the reservation would hold nothing.  ``host`` should
    be an address literal: the lookup is synchronous (this runs at start-up, before any
    traffic).  Raises ``OSError`` like a bind."""
    return _bound(host, port, reuse_addr=False)


def check_bindable(host: str, port: int) -> None:
    """Bind ``host:port`` as a worker's listener will (SO_REUSEADDR and SO_REUSEPORT), then
    let it go: ``OSError`` when another program holds the port (or the address is not
    local), so the supervisor fails at start instead of its workers failing over and over."""
    _bound(host, port, reuse_addr=True).close()


def _bound(host: str, port: int, *, reuse_addr: bool) -> socket.socket:
    """A socket bound to ``host:port`` with ``SO_REUSEPORT``, not listening (``OSError`` like
    a bind); ``host`` an address literal (a synchronous lookup: start-up and reloads only)."""
    if _REUSE_PORT is None:
        raise OSError(errno.ENOPROTOOPT, "SO_REUSEPORT is not supported on this platform")
    family, type_, proto, _, sockaddr = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    sock = socket.socket(family, type_, proto)
    try:
        _prepare(sock, family, reuse_addr=reuse_addr, reuse_port=True)
        sock.bind(sockaddr)
    except BaseException:
        sock.close()
        raise
    return sock
