"""Stand-ins for the channel and messages modules until they land (helper A's part).

Only what :mod:`gateway.workers.processes` uses, with the same names and signatures as
``gateway/workers/channel.py`` and ``messages.py``; at the assembly the pool imports those
and this file goes.
"""

from __future__ import annotations

import pickle
import socket
import struct
from dataclasses import dataclass

import trio

from foundation.errors import IsthmusError

_HEADER = struct.Struct(">I")


class ChannelClosed(IsthmusError):
    """The other end is gone (EOF, reset) or sent a frame this end cannot read."""


@dataclass(frozen=True, slots=True)
class Drain:
    """S->W: stop accepting, finish what is in flight within ``grace_s``, then exit."""

    grace_s: float


class Channel:
    """Whole pickled messages over a private socketpair (4-byte length, then the pickle)."""

    def __init__(self, stream: trio.abc.Stream, *, max_frame: int = 64 << 20) -> None:
        self.stream = stream
        self.max_frame = max_frame
        self._send_lock = trio.Lock()
        self._buffer = bytearray()

    async def send(self, message: object) -> None:
        payload = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        async with self._send_lock:
            try:
                await self.stream.send_all(_HEADER.pack(len(payload)) + payload)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ChannelClosed(f"channel closed while sending: {exc!r}") from exc

    async def receive(self) -> object:
        await self._fill(_HEADER.size)
        (length,) = _HEADER.unpack_from(self._buffer)
        if length > self.max_frame:
            raise ChannelClosed(f"frame of {length} bytes exceeds max_frame {self.max_frame}")
        await self._fill(_HEADER.size + length)
        try:
            message = pickle.loads(bytes(self._buffer[_HEADER.size : _HEADER.size + length]))
        except Exception as exc:
            raise ChannelClosed(f"unreadable frame: {exc!r}") from exc
        del self._buffer[: _HEADER.size + length]
        return message

    async def _fill(self, size: int) -> None:
        while len(self._buffer) < size:
            try:
                data = await self.stream.receive_some(1 << 20)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ChannelClosed(f"channel closed while receiving: {exc!r}") from exc
            if not data:
                raise ChannelClosed("end of stream")
            self._buffer += data

    async def aclose(self) -> None:
        await self.stream.aclose()


def channel_from_socket(sock: socket.socket, *, max_frame: int = 64 << 20) -> Channel:
    return Channel(trio.SocketStream(trio.socket.from_stdlib_socket(sock)), max_frame=max_frame)


def channel_from_fd(fd: int, *, max_frame: int = 64 << 20) -> Channel:
    return channel_from_socket(socket.socket(fileno=fd), max_frame=max_frame)
