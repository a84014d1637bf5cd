"""A stream that holds something (a caller's link slot, a breaker's count) until it closes.

Why one class: the fair share of a peer's link slots (:mod:`gateway.cluster.fair_share`) and
the circuit breakers' flow count (:mod:`gateway.router.flow_breaker`) both hand a tunnel to
the caller with a count taken, and must give it back exactly once, when the tunnel ends.
"""

from __future__ import annotations

from collections.abc import Callable

import trio


class HeldStream(trio.abc.HalfCloseableStream):
    """``inner``, calling ``release`` once, when it is closed (a second close releases nothing)."""

    def __init__(self, inner: trio.abc.HalfCloseableStream, release: Callable[[], None]) -> None:
        self.inner = inner
        self._release: Callable[[], None] | None = release

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self.inner.send_eof()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        try:
            await self.inner.aclose()
        finally:
            release, self._release = self._release, None
            if release is not None:
                release()
