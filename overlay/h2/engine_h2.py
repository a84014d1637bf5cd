"""The ``"h2"`` protocol engine: python-hyper h2 behind ``engine.ProtocolEngine``.

Why: h2 is the general, battle-tested state machine every caller-facing connection keeps
(downstream listeners, upstream endpoints), and the fallback for links.  This adapter holds
what the driver used to call on h2 directly: the state built from our limits (``setup.py``),
DATA framed around it (``data.py``), the window credit split by level (``credit.py``), the
event table (``events.py``) and h2's exceptions, turned into the engine's.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import h2.exceptions

from foundation.errors import H2_PROTOCOL_ERROR
from overlay.h2.credit import credit_connection, credit_stream
from overlay.h2.data import (
    CLIENT_PREFACE,
    FrameSplitter,
    feed_splitter,
    receive_segment,
    send_data_frame,
)
from overlay.h2.engine import EngineRefused, EngineStreamClosed, PeerProtocolError
from overlay.h2.events import dispatch_event
from overlay.h2.limits import H2Limits
from overlay.h2.setup import new_h2_state, start_h2_state
from overlay.h2.stream import HeaderList

if TYPE_CHECKING:
    from overlay.h2.connection import H2Connection


class HyperEngine:
    """``ProtocolEngine`` on h2 (see the module docstring)."""

    def __init__(self, *, client_side: bool, limits: H2Limits) -> None:
        self.limits = limits
        self.h2 = new_h2_state(client_side=client_side, limits=limits)
        self._splitter = FrameSplitter(
            preface=0 if client_side else len(CLIENT_PREFACE),
            max_frame_size=limits.max_frame_size,
            max_continuation_frames=limits.max_continuation_frames,
            max_header_block_bytes=limits.max_header_block_bytes,
        )

    def start(self) -> None:
        start_h2_state(self.h2, self.limits)

    def data_to_send(self) -> bytes:
        return self.h2.data_to_send()

    def receive(self, data: bytes | bytearray, conn: H2Connection, now: float) -> None:
        h2c = self.h2
        try:
            # Frame by frame: a frame that crosses a budget closes the connection before h2
            # has seen (answered, opened a stream for) any frame after it.
            for segment in feed_splitter(h2c, self._splitter, data):
                for event in receive_segment(h2c, segment):
                    dispatch_event(conn, h2c, event, now)
                    if conn._closing:
                        return
        except h2.exceptions.ProtocolError as exc:
            code = int(getattr(exc, "error_code", H2_PROTOCOL_ERROR))
            raise PeerProtocolError(f"HTTP/2 protocol error: {exc}", code) from exc

    @property
    def open_outbound_streams(self) -> int:
        return int(self.h2.open_outbound_streams)

    @property
    def peer_max_concurrent_streams(self) -> int:
        return int(self.h2.remote_settings.max_concurrent_streams)

    @property
    def peer_enables_connect_protocol(self) -> bool:
        return int(self.h2.remote_settings.enable_connect_protocol) == 1

    @property
    def max_outbound_frame_size(self) -> int:
        return int(self.h2.max_outbound_frame_size)

    def open_stream(self, headers: HeaderList, end_stream: bool) -> int:
        stream_id = int(self.h2.get_next_available_stream_id())
        try:
            self.h2.send_headers(stream_id, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:
            self.h2.streams.pop(stream_id, None)  # never sent: do not hold a slot
            raise EngineRefused(str(exc)) from exc
        return stream_id

    def send_headers(self, stream_id: int, headers: HeaderList, end_stream: bool) -> None:
        try:
            self.h2.send_headers(stream_id, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError as exc:
            raise EngineRefused(str(exc)) from exc

    def send_window(self, stream_id: int) -> int:
        try:
            return int(self.h2.local_flow_control_window(stream_id))
        except h2.exceptions.StreamClosedError as exc:
            raise EngineStreamClosed(str(exc)) from exc

    def send_data(
        self,
        out: bytearray,
        stream_id: int,
        payload: bytes | bytearray | memoryview,
        end_stream: bool = False,
    ) -> None:
        try:
            send_data_frame(self.h2, out, stream_id, payload, end_stream=end_stream)
        except h2.exceptions.StreamClosedError as exc:
            raise EngineStreamClosed(str(exc)) from exc
        except h2.exceptions.ProtocolError as exc:
            raise EngineRefused(str(exc)) from exc

    def end_stream(self, stream_id: int) -> None:
        try:
            self.h2.end_stream(stream_id)
        except h2.exceptions.StreamClosedError as exc:
            raise EngineStreamClosed(str(exc)) from exc
        except h2.exceptions.ProtocolError as exc:
            raise EngineRefused(str(exc)) from exc

    def reset_stream(self, stream_id: int, error_code: int) -> None:
        # StreamClosedError: the peer closed it in the meantime, nothing to reset.
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            self.h2.reset_stream(stream_id, error_code)

    def credit_connection(self, nbytes: int) -> None:
        credit_connection(self.h2, nbytes)

    def credit_stream(self, stream_id: int, nbytes: int) -> None:
        credit_stream(self.h2, stream_id, nbytes)

    def ping(self, payload: bytes) -> None:
        self.h2.ping(payload)

    def close_connection(self, error_code: int) -> None:
        # ProtocolError: already closed inside h2 (e.g. after the peer's GOAWAY).
        with contextlib.suppress(h2.exceptions.ProtocolError):
            self.h2.close_connection(error_code=error_code)
