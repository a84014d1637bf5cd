"""Receive-window credit, split by level: the connection on receipt, a stream on consumption.

Why: h2's ``acknowledge_received_data`` credits the connection window and the stream's window
together, so a driver that acknowledges only when a consumer reads lets a few streams whose
consumers stall (a caller that never reads its response) exhaust the *connection* window:
every other stream of that connection stalls with them.  Here the two are credited apart:

* the connection window as soon as a DATA frame's bytes are taken off the wire into their
  stream's buffer (or dropped, for a stream that is gone).  The connection window then only
  bounds bytes in flight, never bytes parked in a buffer;
* a stream's window when its consumer takes the bytes.  The stream window therefore stays the
  bound on what one stream may buffer, and a stalled stream stalls only its own sender.

Memory stays bounded: at most ``max_concurrent_streams * stream_window`` of buffered data per
connection (each stream's buffer is bounded by the window we advertised, which h2 enforces).

The connection window uses h2 4.x's window manager exactly as ``acknowledge_received_data``
does (same WINDOW_UPDATE thresholds); a stream's is credited by the exact increments its
window policy decides.  The dependency is pinned below 5 for these private calls.
"""

from __future__ import annotations

import contextlib

import h2.connection
import h2.exceptions
import hyperframe.frame


def credit_connection(conn: h2.connection.H2Connection, nbytes: int) -> None:
    """``nbytes`` of DATA (padding included) left the wire: hand them back to the connection
    window (a WINDOW_UPDATE on stream 0 is queued when h2's manager decides one is due)."""
    if nbytes <= 0:
        return
    increment = conn._inbound_flow_control_window_manager.process_bytes(nbytes)
    if increment:
        frame = hyperframe.frame.WindowUpdateFrame(0)
        frame.window_increment = increment
        conn._prepare_for_sending([frame])


def credit_stream(conn: h2.connection.H2Connection, stream_id: int, increment: int) -> None:
    """Give ``stream_id``'s peer exactly ``increment`` more window, now (a WINDOW_UPDATE).

    How much, and when, is the stream's window policy's decision (``window_policy.py``: it
    batches, grows and shrinks), not h2's window manager's, whose ``max_window_size`` would cap
    a window that grew.  Nothing for a stream that is closed: its window no longer matters.
    """
    if increment <= 0:
        return
    try:
        stream = conn._get_stream_by_id(stream_id)
    except h2.exceptions.StreamClosedError:
        return
    if stream.open:
        with contextlib.suppress(h2.exceptions.ProtocolError):
            frames = stream.increase_flow_control_window(increment)
            conn._prepare_for_sending(frames)
