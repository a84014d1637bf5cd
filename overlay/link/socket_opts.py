"""Socket options for every TCP connection the gateway relays on, in one place.

Why: two defaults hurt a relay.  Nagle's algorithm holds small writes (HTTP/2 control
frames, response heads) for up to a round trip, so ``TCP_NODELAY`` is set explicitly.  And
trio sets ``TCP_NOTSENT_LOWAT`` to 16 KiB on every socket stream, which makes a large
``send_all`` wake up for every 16 KiB the kernel takes from it: good for an interactive
application that wants to decide late what to send, but a relay already bounds what it holds
(tunnel buffers, HTTP/2 windows) and only pays extra scheduler passes.  Setting the option
to 0 restores the kernel's default (``net.ipv4.tcp_notsent_lowat``: no low-water mark); the
kernel's send buffer stays bounded by its own autotuning.
"""

from __future__ import annotations

import contextlib
import socket

import trio

__all__ = ["tune_relay_socket"]

_NOTSENT_LOWAT = getattr(socket, "TCP_NOTSENT_LOWAT", None)


def tune_relay_socket(tcp: trio.SocketStream) -> None:
    """``TCP_NODELAY`` on, trio's 16 KiB ``TCP_NOTSENT_LOWAT`` off (best-effort: a socket
    that refuses an option, e.g. not TCP, keeps its defaults)."""
    with contextlib.suppress(OSError):
        tcp.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)
    if _NOTSENT_LOWAT is not None:
        with contextlib.suppress(OSError):
            tcp.setsockopt(socket.IPPROTO_TCP, _NOTSENT_LOWAT, 0)
