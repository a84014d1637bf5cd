"""The connection-level half of a sans-IO HTTP/2 connection: preface, SETTINGS, PING, GOAWAY
and the connection's send window.  Stream frames are passed through, in order, for the stream
layer (``connection.py``) to handle.

Why split this way: everything on stream 0 is the same whatever the streams do, and it is
where a link's health lives (PING with a deadline, GOAWAY on drain, SETTINGS the peer must
acknowledge).  Kept free of stream state it can be finished and tested against h2 on its own.

Theory of operation
-------------------
``initiate()`` queues our preface: the client magic (client side) and a SETTINGS frame with
what differs from the RFC's initial values.  Our settings take effect only when the peer
acknowledges them: acknowledgements come in the order the SETTINGS were sent, so they are a
FIFO of pending values; the receive side's frame size limit follows the acknowledged value
(until then the peer may only assume the RFC's 16 KiB).  The peer's first frame must be a
SETTINGS frame (RFC 9113 3.4; h2 does not check this).  A peer SETTINGS frame is validated
(``settings.apply_settings``), applied whole, acknowledged at once, and reported with the old
and new values so the owner can act on what changed.  PING is answered with the same opaque
data; a PING acknowledgement is reported.  GOAWAY is reported; frames after it are still
processed, since streams up to its last stream ID may complete (RFC 9113 6.8; h2 refuses
them).  WINDOW_UPDATE on stream 0 grows the connection's send window; past 2**31-1 it is a
FLOW_CONTROL_ERROR, and an increment of 0 a PROTOCOL_ERROR (6.9).  Unknown frame types are
ignored (4.1) -- but not inside a header block, which ``inbound.InboundFrames`` refuses.

Answers (PING and SETTINGS acknowledgements) queue until the owner takes ``data_to_send``; at
most ``MAX_QUEUED_ANSWERS`` of them, so a peer that floods us while not reading what we write
ends the connection (ENHANCE_YOUR_CALM) instead of growing the queue.  How many control frames
a peer may send per second is the owner's policy (``overlay/h2/limits.py``'s counters).

Errors are :class:`~overlay.h2.codec.errors.CodecError` subclasses carrying the code for the
GOAWAY that ends the connection; after one the object must not be used again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from foundation.errors import H2_ENHANCE_YOUR_CALM, H2_FLOW_CONTROL_ERROR, H2_PROTOCOL_ERROR
from overlay.h2.codec import frames as fr
from overlay.h2.codec.errors import CodecError
from overlay.h2.codec.inbound import PREFACE, InboundFrames
from overlay.h2.codec.settings import (
    MAX_WINDOW,
    RFC_DEFAULTS,
    Settings,
    apply_settings,
    settings_pairs,
)

# --------------------------------------------------------------------------------------------
# Events


@dataclass(frozen=True, slots=True)
class RemoteSettingsChanged:
    previous: Settings
    settings: Settings
    pairs: tuple[tuple[int, int], ...]  # as received (we acknowledged them already)


@dataclass(frozen=True, slots=True)
class SettingsAcknowledged:
    settings: Settings  # ours, now in force


@dataclass(frozen=True, slots=True)
class PingReceived:
    opaque: bytes  # already answered


@dataclass(frozen=True, slots=True)
class PingAckReceived:
    opaque: bytes


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    error_code: int
    last_stream_id: int
    debug: bytes


@dataclass(frozen=True, slots=True)
class WindowUpdated:
    stream_id: int  # 0 here: stream windows belong to the stream layer
    delta: int


@dataclass(frozen=True, slots=True)
class FrameIgnored:
    """A frame that carries nothing for us (PRIORITY, a frame of an unknown type): reported
    only so that the owner can count it (a flood of them still costs us work)."""

    frame_type: int
    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamFrameReceived:
    """A frame for a stream (HEADERS with its whole block, DATA, RST_STREAM, PRIORITY,
    WINDOW_UPDATE on a stream, PUSH_PROMISE), for the stream layer, in arrival order."""

    frame: fr.Frame


Event = (
    RemoteSettingsChanged
    | SettingsAcknowledged
    | PingReceived
    | PingAckReceived
    | ConnectionTerminated
    | WindowUpdated
    | FrameIgnored
    | StreamFrameReceived
)


class ConnectionFlowError(CodecError):
    h2_error_code = H2_FLOW_CONTROL_ERROR


MAX_QUEUED_ANSWERS = 1000
"""PING and SETTINGS acknowledgements waiting for ``data_to_send``: a peer that keeps asking
while not reading (so that our writes stall and nothing is taken) is stopped here instead of
growing the queue (RFC 9113 10.5, the "PING flood")."""


class ControlFlood(CodecError):
    h2_error_code = H2_ENHANCE_YOUR_CALM


class NoSettingsFirst(CodecError):
    """The peer's first frame was not SETTINGS (RFC 9113 3.4: part of its preface)."""

    h2_error_code = H2_PROTOCOL_ERROR


# --------------------------------------------------------------------------------------------
# The connection-level state


class ConnectionControl:
    """Stream-0 state of one connection; see the module docstring."""

    __slots__ = (
        "_answers",
        "_out",
        "_pending",
        "_seen_settings",
        "client",
        "inbound",
        "local",
        "remote",
        "send_window",
        "terminated",
    )

    def __init__(self, *, client: bool, local: Settings = RFC_DEFAULTS) -> None:
        self.client = client
        self.local = RFC_DEFAULTS
        """Our settings as the peer acknowledged them (the RFC's until the first ACK)."""
        self.remote = RFC_DEFAULTS
        """The peer's settings (the RFC's until its first SETTINGS frame)."""
        self.send_window = 65535
        """The connection's send window (RFC 9113 6.9.2: not changed by SETTINGS)."""
        self.terminated: ConnectionTerminated | None = None
        self.inbound = InboundFrames(server=not client)
        self._pending: list[Settings] = [local]
        self._out: list[bytes] = []
        self._answers = 0  # answer frames (PING and SETTINGS ACKs) queued and not yet taken
        self._seen_settings = False

    @property
    def settled(self) -> bool:
        """The peer's first SETTINGS (the end of its preface) has arrived."""
        return self._seen_settings

    # -- sending ------------------------------------------------------------------------------

    def initiate(self) -> None:
        """Queue our side of the preface."""
        if self.client:
            self._out.append(PREFACE)
        self._out.append(fr.settings_frame(settings_pairs(self._pending[0], RFC_DEFAULTS)))

    def update_settings(self, settings: Settings) -> None:
        """Send new settings; they take effect when the peer acknowledges them."""
        base = self._pending[-1] if self._pending else self.local
        self._pending.append(settings)
        self._out.append(fr.settings_frame(settings_pairs(settings, base)))

    def ping(self, opaque: bytes) -> None:
        self._out.append(fr.ping_frame(opaque))

    def data_to_send(self) -> bytes:
        out = b"".join(self._out)
        self._out.clear()
        self._answers = 0
        return out

    # -- receiving ----------------------------------------------------------------------------

    def receive_data(self, data: bytes) -> list[Event]:
        """Process received bytes; the events of the frames they complete, in order.  A bad
        frame raises, and the events of the frames before it in the same call go with the
        exception: use :meth:`receive_data_into` when they matter."""
        events: list[Event] = []
        self.receive_data_into(data, events)
        return events

    def receive_data_into(self, data: bytes, events: list[Event]) -> None:
        """Process received bytes, appending events to ``events`` as each frame is handled, so
        that after an error ``events`` holds those of every frame before the bad one."""
        inbound = self.inbound
        inbound.receive_data(data)
        while (frame := inbound.next_frame()) is not None:
            if not self.handle_frame(frame, events.append):
                events.append(StreamFrameReceived(frame))

    def handle_frame(self, frame: fr.Frame, emit: Callable[[Event], None]) -> bool:
        """Handle a connection-level frame (``emit`` gets its event); False for a stream frame,
        which is the caller's (the stream layer's) to handle."""
        if not self._seen_settings:
            if not isinstance(frame, fr.SettingsFrame) or frame.ack:
                raise NoSettingsFirst(f"first frame is {type(frame).__name__}, not SETTINGS")
            self._seen_settings = True
        if isinstance(frame, fr.SettingsFrame):
            if frame.ack:
                self._acknowledged(emit)
            else:
                previous = self.remote
                self.remote = apply_settings(previous, frame.settings, from_server=self.client)
                self._answer(fr.SETTINGS_ACK)
                emit(RemoteSettingsChanged(previous, self.remote, frame.settings))
        elif isinstance(frame, fr.PingFrame):
            if frame.ack:
                emit(PingAckReceived(frame.opaque))
            else:
                self._answer(fr.ping_frame(frame.opaque, ack=True))
                emit(PingReceived(frame.opaque))
        elif isinstance(frame, fr.WindowUpdateFrame) and not frame.stream_id:
            if not frame.increment:
                raise CodecError("WINDOW_UPDATE of 0 on the connection")
            window = self.send_window + frame.increment
            if window > MAX_WINDOW:
                raise ConnectionFlowError(f"connection send window of {window}, over 2**31-1")
            self.send_window = window
            emit(WindowUpdated(0, frame.increment))
        elif isinstance(frame, fr.GoAwayFrame):
            self.terminated = ConnectionTerminated(
                frame.error_code, frame.last_stream_id, frame.debug
            )
            emit(self.terminated)
        elif isinstance(frame, fr.UnknownFrame):
            emit(FrameIgnored(frame.frame_type, frame.stream_id))
        else:
            return False
        return True

    def _answer(self, frame: bytes) -> None:
        self._out.append(frame)
        self._answers += 1
        if self._answers > MAX_QUEUED_ANSWERS:
            raise ControlFlood(
                f"over {MAX_QUEUED_ANSWERS} PING/SETTINGS answers queued: the peer asks faster "
                "than we are allowed to answer"
            )

    def _acknowledged(self, emit: Callable[[Event], None]) -> None:
        if not self._pending:
            # An ACK of nothing: h2 reports it too, with nothing changed.
            emit(SettingsAcknowledged(self.local))
            return
        self.local = self._pending.pop(0)
        self.inbound.reader.max_frame_size = self.local.max_frame_size
        emit(SettingsAcknowledged(self.local))
