"""The protocol engine of an ``H2Connection``: the narrow interface between the trio driver
(policy, buffers, tasks) and an HTTP/2 state machine.

Why: the driver's policy -- when to credit a window, how much to buffer, when a peer is
abusive or dead -- is the same whichever state machine keeps the protocol.  Two do:

* ``"h2"`` (``engine_h2.HyperEngine``): python-hyper h2, general and battle-tested; upstream
  HTTP/2 endpoints use it, and callers or links whose limits say ``"h2"``;
* ``"lean"`` (``engine_lean.LeanEngine``): our own codec (``overlay/h2/codec``), several times
  cheaper per exchange; links between gateways and callers' connections use it unless
  ``[limits] link_h2_engine`` / ``caller_h2_engine`` says ``"h2"``.

Theory of operation
-------------------
The driver calls the engine synchronously (trio is single-threaded) and takes its output with
``data_to_send`` (``_pump``); DATA frames are written straight into the driver's outbound
buffer by ``send_data`` after anything queued before them, so frame order is call order.
Receiving, ``receive`` handles the bytes frame by frame and calls the driver's handlers
(``_accept_stream``, ``_stream_was_reset``, the stream's ``_on_data``...) for each frame's
events before it looks at the next frame, and stops as soon as the driver is closing (a flood
budget crossed at that frame).  A peer's protocol error is queued as GOAWAY by the engine and
raised as :class:`PeerProtocolError`; refusals of our own calls are the two errors below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from overlay.h2.stream import HeaderList

if TYPE_CHECKING:
    from overlay.h2.connection import H2Connection


class PeerProtocolError(Exception):
    """The peer broke RFC 9113/7541 or one of our bounds; GOAWAY with ``error_code`` is queued."""

    def __init__(self, message: str, error_code: int) -> None:
        super().__init__(message)
        self.error_code = error_code


class EngineStreamClosed(Exception):
    """The stream is closed in the protocol state (the peer reset it meanwhile)."""


class EngineRefused(Exception):
    """The protocol does not allow this call now (e.g. headers on a stream that ended)."""


class ProtocolEngine(Protocol):
    """What ``H2Connection`` needs of an HTTP/2 state machine; see the module docstring."""

    def start(self) -> None:
        """Queue the preface, our SETTINGS and the connection window's widening."""

    def data_to_send(self) -> bytes:
        """Frames queued since the last call."""

    def receive(self, data: bytes | bytearray, conn: H2Connection, now: float) -> None:
        """Handle received bytes frame by frame (see the module docstring)."""

    @property
    def open_outbound_streams(self) -> int: ...

    @property
    def peer_max_concurrent_streams(self) -> int: ...

    @property
    def peer_enables_connect_protocol(self) -> bool: ...

    @property
    def max_outbound_frame_size(self) -> int: ...

    def open_stream(self, headers: HeaderList, end_stream: bool) -> int:
        """Send a request's header block on a new stream; its ID.  ``EngineRefused``: no
        stream was opened (and none is held)."""

    def send_headers(self, stream_id: int, headers: HeaderList, end_stream: bool) -> None:
        """Response headers or trailers; ``EngineRefused`` if the stream's state forbids."""

    def send_window(self, stream_id: int) -> int:
        """DATA bytes both windows allow now; ``EngineStreamClosed`` for a closed stream."""

    def send_data(
        self,
        out: bytearray,
        stream_id: int,
        payload: bytes | bytearray | memoryview,
        end_stream: bool = False,
    ) -> None:
        """Append what is queued, then one DATA frame (within ``send_window`` and the frame
        size), to ``out``."""

    def end_stream(self, stream_id: int) -> None:
        """END_STREAM on an empty DATA frame."""

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        """RST_STREAM; nothing if the stream is already closed."""

    def credit_connection(self, nbytes: int) -> None:
        """DATA left the wire: the connection window may take that much again."""

    def credit_stream(self, stream_id: int, nbytes: int) -> None:
        """The stream's consumer took ``nbytes``: its window may take them again."""

    def ping(self, payload: bytes) -> None: ...

    def close_connection(self, error_code: int) -> None:
        """Queue GOAWAY; nothing if the protocol state is already closed."""
