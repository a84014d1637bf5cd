"""The inbound side of a connection before any stream state: preface, frames, header blocks.

Why a layer of its own: everything here is decided by the byte sequence alone, and it is where
a peer's floods are stopped before they cost anything -- a wrong preface at its first wrong
byte, a frame over our size limit at its header (``frames.FrameReader``), and a header block
that is too long in CONTINUATION frames or in bytes as the frame that crosses the bound
arrives.  The connection above sees only whole header blocks.

Theory of operation
-------------------
A server first expects the 24-octet client preface (RFC 9113 3.4); each received byte is
compared as it arrives.  Frames then go through the frame reader, and through the header
block assembler: a HEADERS or PUSH_PROMISE frame without END_HEADERS opens a block, which
only CONTINUATION frames of the same stream may follow (RFC 9113 6.10; anything else is a
PROTOCOL_ERROR); the last one (END_HEADERS) closes it, and the block comes out as one
HEADERS (or PUSH_PROMISE) frame with END_HEADERS set and the whole block as its fragment.  A
CONTINUATION outside a block is a PROTOCOL_ERROR too.

Bounds: ``max_continuations`` CONTINUATION frames per block, and ``max_block_bytes`` of block.
Crossing either is ENHANCE_YOUR_CALM: a peer that sends a block that large is abusing us, not
mistaken, and the limits are well above what our own encoder sends (RFC 9113 10.5.1 lets a
receiver bound the header list; these bound its encoding).  A block is checked as each frame
arrives, so at most ``max_block_bytes`` plus one frame is held.

This layer is tested against h2's ``FrameBuffer`` (which does the same job for h2) under any
split of the bytes.
"""

from __future__ import annotations

from foundation.errors import H2_ENHANCE_YOUR_CALM
from overlay.h2.codec.errors import CodecError
from overlay.h2.codec.frames import (
    DEFAULT_MAX_FRAME_SIZE,
    ContinuationFrame,
    Frame,
    FrameError,
    FrameReader,
    HeadersFrame,
    PushPromiseFrame,
)

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DEFAULT_MAX_CONTINUATIONS = 63
"""CONTINUATION frames per header block: h2's bound (a block of HEADERS and 63 more frames)."""

DEFAULT_MAX_BLOCK_BYTES = 128 * 1024
"""Encoded header block bytes: twice the default 64 KiB header list limit, so any list under
that limit fits however it is encoded (a literal costs at most a few octets more than the
field's size in the list)."""


class BadPreface(CodecError):
    """The client did not start with the HTTP/2 connection preface."""


class HeaderBlockFlood(CodecError):
    """A header block over our bound in CONTINUATION frames or in bytes."""

    h2_error_code = H2_ENHANCE_YOUR_CALM


class InboundFrames:
    """Preface check, frame reader and header block assembler, for any split of the bytes.

    Use: ``receive_data(bytes)``, then ``next_frame()`` until it returns None.  After an
    error (a :class:`CodecError`) the state is undefined: the connection ends.
    """

    __slots__ = (
        "_block_bytes",
        "_continuations",
        "_first",
        "_parts",
        "_preface_left",
        "max_block_bytes",
        "max_continuations",
        "reader",
    )

    def __init__(
        self,
        *,
        server: bool,
        max_frame_size: int = DEFAULT_MAX_FRAME_SIZE,
        max_continuations: int = DEFAULT_MAX_CONTINUATIONS,
        max_block_bytes: int = DEFAULT_MAX_BLOCK_BYTES,
    ) -> None:
        self.reader = FrameReader(max_frame_size)
        self.max_continuations = max_continuations
        self.max_block_bytes = max_block_bytes
        self._preface_left = PREFACE if server else b""
        self._first: HeadersFrame | PushPromiseFrame | None = None
        self._parts: list[bytes] = []
        self._continuations = 0
        self._block_bytes = 0

    @property
    def in_header_block(self) -> bool:
        return self._first is not None

    def receive_data(self, data: bytes | bytearray) -> None:
        if self._preface_left:
            n = min(len(self._preface_left), len(data))
            if data[:n] != self._preface_left[:n]:
                raise BadPreface("the client's first bytes are not the HTTP/2 preface")
            self._preface_left = self._preface_left[n:]
            data = data[n:]
        self.reader.receive_data(data)

    def next_frame(self) -> Frame | None:
        """The next frame, header blocks whole; None until more bytes arrive."""
        while (frame := self.reader.next_frame()) is not None:
            first = self._first
            if first is None:
                if isinstance(frame, HeadersFrame | PushPromiseFrame):
                    if len(frame.fragment) > self.max_block_bytes:
                        raise HeaderBlockFlood(
                            f"header block of more than {self.max_block_bytes} bytes"
                        )
                    if frame.end_headers:
                        return frame
                    self._open(frame)
                    continue
                if isinstance(frame, ContinuationFrame):
                    raise FrameError(f"CONTINUATION on stream {frame.stream_id} outside a block")
                return frame
            if not isinstance(frame, ContinuationFrame) or frame.stream_id != first.stream_id:
                raise FrameError(
                    f"{type(frame).__name__} inside the header block of stream {first.stream_id}"
                )
            self._continuations += 1
            if self._continuations > self.max_continuations:
                raise HeaderBlockFlood(
                    f"header block of more than {self.max_continuations} CONTINUATION frames"
                )
            self._block_bytes += len(frame.fragment)
            if self._block_bytes > self.max_block_bytes:
                raise HeaderBlockFlood(f"header block of more than {self.max_block_bytes} bytes")
            self._parts.append(frame.fragment)
            if frame.end_headers:
                return self._close(first)
        return None

    def _open(self, frame: HeadersFrame | PushPromiseFrame) -> None:
        self._first = frame
        self._parts = [frame.fragment]
        self._continuations = 0
        self._block_bytes = len(frame.fragment)

    def _close(self, first: HeadersFrame | PushPromiseFrame) -> Frame:
        block = b"".join(self._parts)
        self._first = None
        self._parts = []
        if isinstance(first, HeadersFrame):
            return HeadersFrame(first.stream_id, block, first.end_stream, True, first.priority)
        return PushPromiseFrame(first.stream_id, first.promised_stream_id, block, True)
