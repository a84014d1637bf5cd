"""Route h2 events to the streams of an ``H2Connection``; count the ones that cost us work.

Why a separate module: this is the table of "what each h2 event means to us", kept apart from
the trio driver so each file stays one concept.  It runs synchronously inside the reader task,
called by the h2 engine (``engine_h2.py``); the lean engine has its own table
(``engine_lean.py``) calling the same driver methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import h2.connection
import h2.events

from overlay.h2.credit import credit_connection, credit_stream
from overlay.h2.setup import MalformedHeaderBlock, OversizedHeaders
from overlay.h2.stream import HeaderList

if TYPE_CHECKING:
    from overlay.h2.connection import H2Connection


def _headers(raw: object) -> HeaderList:
    assert isinstance(raw, list)
    return [(bytes(n), bytes(v)) for n, v in raw]


def dispatch_event(
    conn: H2Connection, h2c: h2.connection.H2Connection, event: h2.events.Event, now: float
) -> None:
    streams = conn._streams
    if isinstance(event, h2.events.DataReceived):
        data = event.data or b""
        padding = event.flow_controlled_length - len(data)
        # Off the wire into the stream's bounded buffer (or dropped): the connection window is
        # credited now, whatever the stream's consumer does (``overlay.h2.credit``).
        credit_connection(h2c, event.flow_controlled_length)
        stream = streams.get(event.stream_id)
        if stream is None:
            return  # not (or no longer) ours: its stream window no longer matters
        if padding:
            credit_stream(h2c, event.stream_id, padding)
        if not data and event.stream_ended is None:
            conn._note_control_frame(now)  # empty DATA frames carry nothing but cost work
        stream._on_data(data)
    elif isinstance(event, h2.events.RequestReceived):
        conn._accept_stream(event.stream_id, _headers(event.headers), now)
    elif isinstance(event, h2.events.ResponseReceived):
        if (stream := streams.get(event.stream_id)) is not None:
            stream._on_headers(_headers(event.headers))
    elif isinstance(event, h2.events.TrailersReceived):
        if (stream := streams.get(event.stream_id)) is not None:
            stream._on_trailers(_headers(event.headers))
    elif isinstance(event, h2.events.StreamEnded):
        if (stream := streams.get(event.stream_id)) is not None:
            stream._on_eof()
            conn._forget_if_finished(stream)
    elif isinstance(event, h2.events.StreamReset):
        if (stream := streams.get(event.stream_id)) is not None:
            conn._stream_was_reset(stream, int(event.error_code or 0), event.remote_reset, now)
        # A reset of a stream we already finished saved us no work: not a premature reset.
    elif isinstance(event, MalformedHeaderBlock):
        # h2_setup reset the stream (PROTOCOL_ERROR); a request that never reached a handler
        # still cost us a decode, so it counts against the peer's premature-reset budget.
        conn._note_malformed(event.stream_id, event.reason, now)
    elif isinstance(event, OversizedHeaders):
        conn._refuse_oversized(event.stream_id, event.size, event.limit, event.stream_ended, now)
    elif isinstance(event, h2.events.WindowUpdated):
        conn._room_lot.unpark_all()
    elif isinstance(event, h2.events.RemoteSettingsChanged):
        conn._peer_settings_seen = True
        conn._note_control_frame(now)
        conn._room_lot.unpark_all()
        conn._slot_lot.unpark_all()
    elif isinstance(event, h2.events.PingReceived):
        conn._note_control_frame(now)
    elif isinstance(event, h2.events.PingAckReceived):
        conn._on_ping_ack(bytes(event.ping_data), now)
    elif isinstance(event, h2.events.ConnectionTerminated):
        conn._on_goaway(int(event.error_code or 0))
    elif isinstance(
        event,
        h2.events.PriorityUpdated | h2.events.UnknownFrameReceived | h2.events.SettingsAcknowledged,
    ):
        conn._note_control_frame(now)
    # InformationalResponseReceived (1xx) and the rest need no action.
