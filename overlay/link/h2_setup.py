"""Build and start the h2 state machine of one connection from ``H2Limits``.

Why apart from the driver: this is where h2's defaults are bent to our limits, and where the
two h2 behaviours we must work around are documented (see ``RefusingH2`` and
``start_h2_state``).
"""

from __future__ import annotations

from dataclasses import dataclass

import h2.config
import h2.connection
import h2.settings
import hyperframe.frame

from overlay.link.h2_limits import H2Limits


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


class RefusingH2(h2.connection.H2Connection):
    """h2 turns a HEADERS frame above MAX_CONCURRENT_STREAMS into a *connection* error (GOAWAY
    PROTOCOL_ERROR), killing every stream of a peer that merely raced our SETTINGS.  We want
    the retryable stream error REFUSED_STREAM instead, so h2 is told ``inbound_slack`` fewer
    open streams than there are and the driver refuses the excess itself.  A peer that opens
    more than limit + slack streams within a single read still gets the connection error."""

    inbound_slack = 0

    @property
    def open_inbound_streams(self) -> int:
        return max(0, int(super().open_inbound_streams) - self.inbound_slack)


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
            # (overlay/tunnel/h2_fields.py) instead of h2's chain of generators.
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    conn.inbound_slack = limits.max_concurrent_streams
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
    conn.local_settings = h2.settings.Settings(client=client_side, initial_values=initial)
    conn.decoder.max_header_list_size = limits.max_header_list_size
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
