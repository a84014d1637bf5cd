"""Build and start the h2 state machine of one connection from ``H2Limits``.

Why apart from the driver: this is where h2's defaults are bent to our limits, and where the
two h2 behaviours we must work around are documented (see ``RefusingH2`` and
``start_h2_state``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import hyperframe.frame

from overlay.h2.limits import H2Limits


def _data_frame_body_repr(self: hyperframe.frame.DataFrame) -> str:
    return f"<{len(self.data)} bytes of data>"


# h2 logs every received frame with ``logger.trace("...", repr(frame))``: the repr is built
# even when tracing is off, and a DATA frame's default repr hex-encodes its whole payload.
# Measured on a bulk tunnel that was 13.5% of a gateway's CPU; a repr that states the length
# costs nothing and says what a trace needs.
hyperframe.frame.DataFrame._body_repr = _data_frame_body_repr  # type: ignore[method-assign,assignment]

#: RFC 9113 section 6.9.2: the initial stream window every peer assumes before SETTINGS.
DEFAULT_WINDOW = 65535


@dataclass(frozen=True, slots=True)
class H2ConnectionStatistics:
    client_side: bool
    open_streams: int
    outbound_buffered: int
    max_outbound_buffered: int
    bytes_received: int
    bytes_sent: int
    streams_opened: int
    streams_refused: int
    handlers_running: int
    premature_resets: int
    control_frames: int
    last_ping_rtt: float | None
    closed: bool
    close_reason: str | None
    flow_control_stalls: int = 0
    abuse_goaway: bool = False


class MalformedHeaderBlock(h2.events.Event):
    """A header block decoded fine but broke RFC 9113 section 8 (an uppercase or
    connection-specific field, a missing or misplaced pseudo-header, trailers without
    END_STREAM...).  The stream was reset with PROTOCOL_ERROR; the connection carries on."""

    def __init__(self, stream_id: int, reason: str) -> None:
        self.stream_id = stream_id
        self.reason = reason

    def __repr__(self) -> str:
        return f"<MalformedHeaderBlock stream_id:{self.stream_id}, reason:{self.reason}>"


class OversizedHeaders(h2.events.Event):
    """A request's header block decoded whole but its list is over the limit we advertise
    (SETTINGS_MAX_HEADER_LIST_SIZE).  h2 opened the stream; the driver answers it with 431
    (RFC 9113 section 10.5.1, RFC 6585) and the connection carries on."""

    def __init__(self, stream_id: int, size: int, limit: int, stream_ended: bool) -> None:
        self.stream_id = stream_id
        self.size = size
        self.limit = limit
        self.stream_ended = stream_ended

    def __repr__(self) -> str:
        return f"<OversizedHeaders stream_id:{self.stream_id}, size:{self.size}>"


class _TellingDecoder(hpack.Decoder):
    """Remembers whether the last header block decoded, and how large its list was.

    A block that failed to decode may have left the HPACK table (shared by every stream)
    half-updated: a connection error.  One that decoded and then failed h2's checks is a
    malformed message: a stream error.  So that a list merely over our limit is a stream
    error too, hpack is told a larger bound (``cap``, where decoding stops: HPACK bombs) than
    the one h2 sets from our SETTINGS (``advertised``); ``list_size`` is then compared with
    ``advertised`` by ``RefusingH2``.
    """

    decoded = False
    list_size = 0

    def __init__(self, *, advertised: int, cap: int) -> None:
        self.cap = cap
        self.advertised = advertised
        super().__init__(max_header_list_size=advertised)

    @property
    def max_header_list_size(self) -> int:
        """What hpack stops decoding at (read by hpack's decode loop)."""
        return self.cap

    @max_header_list_size.setter
    def max_header_list_size(self, value: int) -> None:
        # h2 sets our advertised SETTINGS_MAX_HEADER_LIST_SIZE here once the peer acked it.
        self.advertised = value

    def decode(self, data: bytes, raw: bool = False) -> Iterable[hpack.HeaderTuple]:
        self.decoded = False
        headers = list(super().decode(data, raw))
        # RFC 7541 section 4.1 / RFC 9113 section 6.5.2: name + value + 32 per field.
        self.list_size = sum(len(n) + len(v) + 32 for n, v in headers)
        self.decoded = True
        return headers


class RefusingH2(h2.connection.H2Connection):
    """h2 with two connection errors turned into the stream errors RFC 9113 asks for.

    * h2 turns a HEADERS frame above MAX_CONCURRENT_STREAMS into a *connection* error (GOAWAY
      PROTOCOL_ERROR), killing every stream of a peer that merely raced our SETTINGS.  We want
      the retryable stream error REFUSED_STREAM instead, so h2 is told ``inbound_slack`` fewer
      open streams than there are and the driver refuses the excess itself.  A peer that opens
      more than limit + slack streams within a single read still gets the connection error.
    * h2 answers a malformed request or response (section 8.1.1: "MUST be treated as a stream
      error of type PROTOCOL_ERROR") with GOAWAY too, so one bad request from a caller failed
      every other request on its connection.  Here such a block resets its stream only and
      yields ``MalformedHeaderBlock``; the driver counts it against the peer's reset budget.  A
      block that fails to *decode* stays a connection error (see ``_TellingDecoder``), and so
      does anything h2 raises for the stream's state.
    * h2 answers a header list over our advertised limit with GOAWAY as well.  Here a block
      that decoded whole (under ``_TellingDecoder.cap``) with a list over the limit refuses
      its stream only: a request yields ``OversizedHeaders`` (the driver answers 431), a
      response or trailers reset the stream and yield ``MalformedHeaderBlock``.
    """

    inbound_slack = 0

    @property
    def open_inbound_streams(self) -> int:
        return max(0, int(super().open_inbound_streams) - self.inbound_slack)

    def _receive_headers_frame(
        self, frame: hyperframe.frame.HeadersFrame
    ) -> tuple[list[hyperframe.frame.Frame], list[h2.events.Event]]:
        decoder = self.decoder
        assert isinstance(decoder, _TellingDecoder)
        decoder.decoded = False
        decoder.list_size = 0
        try:
            frames, events = super()._receive_headers_frame(frame)
        except h2.exceptions.ProtocolError as exc:
            # Only h2's plain ProtocolError is a verdict on the message; its subclasses
            # (stream closed, too many streams, oversized block...) keep h2's meaning.
            stream = self.streams.get(frame.stream_id)
            if type(exc) is not h2.exceptions.ProtocolError or not decoder.decoded or not stream:
                raise
            try:
                frames = stream.reset_stream(h2.errors.ErrorCodes.PROTOCOL_ERROR)
            except h2.exceptions.ProtocolError:
                raise exc from None  # the stream's state machine had refused it: h2's verdict
            return frames, [MalformedHeaderBlock(frame.stream_id, str(exc))]
        if decoder.list_size > decoder.advertised:
            return self._oversized(frame, frames, events, decoder)
        return frames, events

    def _oversized(
        self,
        frame: hyperframe.frame.HeadersFrame,
        frames: list[hyperframe.frame.Frame],
        events: list[h2.events.Event],
        decoder: _TellingDecoder,
    ) -> tuple[list[hyperframe.frame.Frame], list[h2.events.Event]]:
        size, limit, sid = decoder.list_size, decoder.advertised, frame.stream_id
        if any(isinstance(e, h2.events.RequestReceived) for e in events):
            ended = "END_STREAM" in frame.flags
            rest = [
                e
                for e in events
                if not isinstance(e, h2.events.RequestReceived | h2.events.StreamEnded)
            ]
            return frames, [OversizedHeaders(sid, size, limit, ended), *rest]
        why = f"header list of {size} bytes is over the limit of {limit}"
        stream = self.streams.get(sid)
        if stream is not None and not stream.closed:
            frames = frames + stream.reset_stream(h2.errors.ErrorCodes.PROTOCOL_ERROR)
        return frames, [MalformedHeaderBlock(sid, why)]


def new_h2_state(*, client_side: bool, limits: H2Limits) -> RefusingH2:
    """An h2 connection whose advertised settings are ``limits``.

    Settings that *tighten* what the peer may already do before it sees our SETTINGS (a stream
    window below 65535) are not applied here but sent by ``start_h2_state`` as an update that
    takes effect when the peer acknowledges it: applying them at once would turn the peer's
    legitimate early DATA into a FLOW_CONTROL_ERROR (RFC 9113 section 6.9.2).
    """
    conn = RefusingH2(
        config=h2.config.H2Configuration(
            client_side=client_side,
            header_encoding=None,
            # Inbound validation stays on.  Outbound, every block passes our one-loop check
            # (overlay/h2/fields.py) instead of h2's chain of generators.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    conn.inbound_slack = limits.max_concurrent_streams
    conn.decoder = _TellingDecoder(
        advertised=limits.max_header_list_size, cap=limits.max_decoded_header_list
    )
    codes = h2.settings.SettingCodes
    initial = {
        codes.MAX_CONCURRENT_STREAMS: limits.max_concurrent_streams,
        codes.MAX_HEADER_LIST_SIZE: limits.max_header_list_size,
        codes.MAX_FRAME_SIZE: limits.max_frame_size,
    }
    if limits.stream_window >= DEFAULT_WINDOW:
        initial[codes.INITIAL_WINDOW_SIZE] = limits.stream_window
    if client_side:
        initial[codes.ENABLE_PUSH] = 0
    elif limits.enable_connect_protocol:
        initial[codes.ENABLE_CONNECT_PROTOCOL] = 1  # RFC 8441: only a server sends it
    conn.local_settings = h2.settings.Settings(client=client_side, initial_values=initial)
    # Accepting larger frames before the peer has seen our SETTINGS is harmless.
    conn.max_inbound_frame_size = limits.max_frame_size
    return conn


def start_h2_state(conn: RefusingH2, limits: H2Limits) -> None:
    """Queue the preface/SETTINGS, widen the connection window, send deferred settings."""
    conn.initiate_connection()
    if limits.stream_window < DEFAULT_WINDOW:
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.stream_window})
    extra = limits.connection_window - conn.inbound_flow_control_window
    if extra > 0:
        conn.increment_flow_control_window(extra)
