"""Copy bytes both ways between two streams, with half-close and bounded buffering.

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

from dataclasses import dataclass

import trio

READ_SIZE = 64 * 1024


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


class PrefixedStream(trio.abc.HalfCloseableStream):
    """``inner`` with ``prefix`` (bytes already read from it) handed out first.

    ``send_eof`` half-closes a TCP stream; TLS in trio cannot half-close, so there it does
    nothing (the stream ends when both directions are done).
    """

    def __init__(self, inner: trio.abc.Stream, prefix: bytes) -> None:
        self.inner = inner
        self._prefix = prefix

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            await trio.lowlevel.checkpoint()
            n = len(self._prefix) if max_bytes is None else max_bytes
            out, self._prefix = self._prefix[:n], self._prefix[n:]
            return out
        return await self.inner.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        if isinstance(self.inner, trio.abc.HalfCloseableStream):
            await self.inner.send_eof()
        else:
            await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await self.inner.aclose()
