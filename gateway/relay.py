"""The one L4 relay: copy bytes both ways between two streams, half-close, bounded buffers.

:func:`relay_l4` is what every L4 entry shares (HTTP ``CONNECT``, the WebSocket upgrade, SNI,
TCP service ports); the inbound side splices a peer's tunnel stream with an endpoint
connection with the same :func:`splice` and aborts the endpoint side with
:func:`abort_on_close` when the tunnel failed.

Why this shape: an L4 tunnel joins a TCP socket to an HTTP/2 CONNECT stream (or two sockets).
Each direction is one loop that reads at most ``read_size`` bytes and writes them before
reading again, so at most one piece per direction is in flight here: a slow reader stalls its
writer through TCP and HTTP/2 flow control, and memory stays flat whatever the volume.

Half-close: when one side sends EOF, the other side gets ``send_eof()`` (TCP FIN, or
END_STREAM) and the opposite direction keeps flowing until it ends too.  An error on either
side ends both directions (the caller resets/closes both streams).  ``idle_timeout`` bounds
the time with no byte moving in either direction.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from dataclasses import dataclass

import trio

from gateway.config.model import LimitsConfig
from gateway.http.exchange import READ_SIZE
from gateway.listener.caller_stream import mark_failed

# The relay's lines have always been the listener's: an operator filters on that name.
log = logging.getLogger("isthmus.listener")


@dataclass
class SpliceStatistics:
    a_to_b: int = 0
    b_to_a: int = 0


class SpliceIdle(Exception):
    """No byte moved in either direction for ``idle_timeout`` seconds."""


async def _pump(
    src: trio.abc.ReceiveStream,
    dst: trio.abc.SendStream,
    stats: SpliceStatistics,
    forward: bool,
    activity: list[float],
    read_size: int,
) -> None:
    while True:
        data = await src.receive_some(read_size)
        if not data:
            break
        await dst.send_all(data)
        activity[0] = trio.current_time()
        if forward:
            stats.a_to_b += len(data)
        else:
            stats.b_to_a += len(data)
    if isinstance(dst, trio.abc.HalfCloseableStream):
        await dst.send_eof()


async def splice(
    a: trio.abc.Stream,
    b: trio.abc.Stream,
    *,
    read_size: int = READ_SIZE,
    idle_timeout: float | None = None,
) -> SpliceStatistics:
    """Copy ``a`` -> ``b`` and ``b`` -> ``a`` until both directions ended.

    Does not close either stream (the owner does).  Raises whatever a stream raised, or
    :class:`SpliceIdle`.
    """
    stats = SpliceStatistics()
    activity = [trio.current_time()]
    async with trio.open_nursery() as nursery:
        if idle_timeout is not None:

            async def watchdog() -> None:
                while True:
                    await trio.sleep_until(activity[0] + idle_timeout)
                    if trio.current_time() >= activity[0] + idle_timeout:
                        raise SpliceIdle(f"no data for {idle_timeout}s")

            nursery.start_soon(watchdog)

        async def both() -> None:
            async with trio.open_nursery() as inner:
                inner.start_soon(_pump, a, b, stats, True, activity, read_size)
                inner.start_soon(_pump, b, a, stats, False, activity, read_size)
            nursery.cancel_scope.cancel()

        nursery.start_soon(both)
    return stats


async def relay_l4(
    downstream: trio.abc.Stream,
    upstream: trio.abc.Stream,
    limits: LimitsConfig,
    *,
    what: str,
    first: bytes = b"",
) -> None:
    """Relay an opened L4 tunnel until both directions end, then close ``upstream``.

    The one relay every L4 entry shares (HTTP ``CONNECT``, SNI, TCP service ports):
    ``first`` (e.g. a peeked ClientHello) goes upstream before anything else; each direction
    holds at most ``limits.tunnel_buffer_bytes``; ``limits.idle_timeout_s`` ends an idle
    tunnel.  Either side failing ends the relay -- there is nobody left to tell -- and
    marks the caller's connection failed (closed with RST if bytes are still queued for it).
    """
    try:
        if first:
            await upstream.send_all(first)
        await splice(
            downstream,
            upstream,
            read_size=limits.tunnel_buffer_bytes,
            idle_timeout=limits.idle_timeout_s,
        )
    except* Exception as group:  # errors only; a Cancelled in the group goes on
        mark_failed(downstream)
        log.debug("%s relay ended: %r", what, group.exceptions)
    finally:
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(upstream)


def abort_on_close(stream: trio.abc.Stream) -> None:
    """Make the coming close send RST (SO_LINGER 0), so the endpoint sees an abort, not EOF."""
    tcp = getattr(stream, "inner", stream)  # a PrefixedStream hands back an endpoint's bytes
    if not isinstance(tcp, trio.SocketStream):
        return
    with contextlib.suppress(OSError):
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
