"""A stream with bytes already read from it handed out first.

Why: a listener peeks at the first bytes to choose a protocol (the HTTP/2 preface, a TLS
ClientHello) and an HTTP/1.1 upgrade may leave an endpoint's first bytes in a parser's buffer;
the protocol that then takes the stream must see them again, in order.
"""

from __future__ import annotations

import trio


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
