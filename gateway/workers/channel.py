"""The supervisor <-> worker control channel: length-prefixed pickled frames on a socketpair.

Why pickle: both ends are this program, started together, and the socketpair is private to
the two processes (created by the supervisor, inherited by exactly one child), so there is no
untrusted peer to defend against and the frozen dataclasses of :mod:`gateway.workers.messages`
cross as they are, without a second schema.  Never point a :class:`Channel` at a socket
someone else can write to.

A frame is a 4-byte big-endian length and that many bytes of pickle.  Frames are bounded
(``max_frame``, both directions): the snapshot feed keeps every message well under it (see
:mod:`gateway.workers.snapshot`), so an oversized length means a broken stream, not a big
message, and ends the channel with :class:`ChannelClosed` like EOF does.
"""

from __future__ import annotations

import pickle
import socket
import struct
from collections.abc import Callable

import trio

from foundation.errors import IsthmusError

DEFAULT_MAX_FRAME = 64 << 20
_HEADER = struct.Struct(">I")
_CHUNK = 1 << 20


class ChannelClosed(IsthmusError):
    """The other end is gone (EOF, reset) or sent a frame this end cannot read."""


def encode(message: object) -> bytes:
    """One frame's payload (the pickle of ``message``); see :meth:`Channel.send_encoded`."""
    return pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)


class Channel:
    """Whole messages over a byte stream.

    ``send`` may be called from several tasks (a lock keeps each frame whole); ``receive``
    from one task at a time (a second concurrent receiver is a bug and raises
    ``trio.BusyResourceError``).
    """

    def __init__(self, stream: trio.abc.Stream, *, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        if not 0 < max_frame < 1 << 32:
            raise ValueError(f"max_frame must be in 1..2**32-1, got {max_frame}")
        self.stream = stream
        self.max_frame = max_frame
        self._send_lock = trio.Lock()
        self._receiving = False
        self._buffer = bytearray()
        #: Bytes of payload sent and received (for the benchmark and /workers).
        self.bytes_sent = 0
        self.bytes_received = 0
        #: The payload size of the last frame received.
        self.last_frame_bytes = 0
        #: Called with a frame's size before it is unpickled (a worker's cyclic-GC policy,
        #: :mod:`gateway.workers.snapshot_gc`).
        self.on_frame: Callable[[int], None] | None = None

    async def send(self, message: object) -> None:
        """Send ``message`` as one frame; :class:`ChannelClosed` if the other end is gone."""
        await self.send_encoded(encode(message))

    async def send_encoded(self, payload: bytes) -> None:
        """Send a payload made by :func:`encode` (lets a caller encode once for N workers)."""
        if len(payload) > self.max_frame:
            raise ValueError(f"frame of {len(payload)} bytes exceeds max_frame {self.max_frame}")
        async with self._send_lock:
            try:
                await self.stream.send_all(_HEADER.pack(len(payload)))
                await self.stream.send_all(payload)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ChannelClosed(f"channel closed while sending: {exc!r}") from exc
            self.bytes_sent += len(payload)

    async def receive(self) -> object:
        """The next message; :class:`ChannelClosed` at EOF or on a broken frame."""
        if self._receiving:
            raise trio.BusyResourceError("another task is already receiving on this channel")
        self._receiving = True
        try:
            await self._fill(_HEADER.size)
            (length,) = _HEADER.unpack_from(self._buffer)
            if length > self.max_frame:
                raise ChannelClosed(f"frame of {length} bytes exceeds max_frame {self.max_frame}")
            end = _HEADER.size + length
            await self._fill(end)
            self.last_frame_bytes = length
            if self.on_frame is not None:
                self.on_frame(length)
            try:
                with memoryview(self._buffer) as view, view[_HEADER.size : end] as frame:
                    message = pickle.loads(frame)
            except Exception as exc:  # any unpickling failure is a broken frame
                raise ChannelClosed(f"unreadable frame: {exc!r}") from exc
            del self._buffer[:end]
        finally:
            self._receiving = False
        self.bytes_received += length
        return message

    async def _fill(self, size: int) -> None:
        while len(self._buffer) < size:
            try:
                data = await self.stream.receive_some(_CHUNK)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise ChannelClosed(f"channel closed while receiving: {exc!r}") from exc
            if not data:
                what = "mid-frame" if self._buffer else "at a frame boundary"
                raise ChannelClosed(f"end of stream {what}")
            self._buffer += data

    async def aclose(self) -> None:
        await self.stream.aclose()

    async def __aenter__(self) -> Channel:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()


def channel_from_socket(sock: socket.socket, *, max_frame: int = DEFAULT_MAX_FRAME) -> Channel:
    """A channel over a connected stdlib stream socket (the supervisor's end of a
    ``socket.socketpair()``); the channel owns the socket from here on."""
    return Channel(trio.SocketStream(trio.socket.from_stdlib_socket(sock)), max_frame=max_frame)


def channel_from_fd(fd: int, *, max_frame: int = DEFAULT_MAX_FRAME) -> Channel:
    """A worker wraps the channel fd it inherited (``--channel-fd``); takes ownership of it."""
    sock = socket.socket(fileno=fd)
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ValueError(f"fd {fd} is not a stream socket")
    return channel_from_socket(sock, max_frame=max_frame)


def channel_pair(*, max_frame: int = DEFAULT_MAX_FRAME) -> tuple[Channel, socket.socket]:
    """A new private Unix socketpair: this process's channel and the child's end (pass its
    ``fileno()`` in ``pass_fds``, then close it here once the child has started)."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return channel_from_socket(ours, max_frame=max_frame), theirs
