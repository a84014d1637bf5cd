"""Limits of one HTTP/2 connection and the pure flood counters that enforce them.

Why a separate, pure module: the numbers are policy (RELIABILITY.md's defaults, overridable in
config) and the flood decision is arithmetic on timestamps.  Keeping both free of trio and h2
lets them be unit-tested directly and read in one place.

Theory of operation (flood counters)
------------------------------------
A :class:`WindowCounter` counts events in fixed windows of ``window`` seconds.  The first event
at or after ``start + window`` opens a new window with a count of zero.  ``record(now)`` returns
the new counter and whether the count has gone *above* ``limit`` in the current window.  Fixed
windows allow a burst of at most ``2 * limit`` across a window boundary, which is a bound --
all that matters for abuse protection -- and cost O(1) memory, unlike a sliding log.

The connection keeps two counters:

* premature resets: streams the peer reset (or that we had to refuse or reset because of the
  peer) before our side finished them -- the HTTP/2 Rapid Reset attack (CVE-2023-44487) and the
  refused-stream / "MadeYouReset" variants;
* control frames: PING, SETTINGS, PRIORITY, unknown-type and empty DATA frames, which cost the
  receiver work (and, for PING/SETTINGS, an answer) while carrying nothing.

Going over either limit closes the connection with GOAWAY ENHANCE_YOUR_CALM.  CONTINUATION
floods are bounded inside h2 (at most 64 CONTINUATION frames per header block, then a
connection error) and by the header list limit (HPACK decoding fails above it).
"""

from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * KIB


@dataclass(frozen=True, slots=True)
class H2Limits:
    """Every bound one HTTP/2 connection enforces.  Defaults are RELIABILITY.md's.

    Why each exists:

    * ``max_concurrent_streams``: advertised in SETTINGS; a new stream above it is refused
      with REFUSED_STREAM (retryable), so one peer cannot pin unbounded handler tasks.
    * ``stream_window`` / ``connection_window``: our receive windows.  Data is acknowledged
      only when the consumer takes it, so the window *is* the per-stream receive buffer bound.
    * ``max_header_list_size``: decoded header list bound (HPACK bomb protection).
    * ``max_frame_size``: largest frame we accept (RFC default 16 KiB; larger frames mean fewer
      frames per byte on bulk tunnels, at the cost of a larger frame buffer per connection).
    * ``max_outbound_buffer``: bytes queued for the transport; above it senders wait and the
      reader stops reading, so a peer that never reads cannot grow our memory.
    * ``read_size``: bytes asked of the transport per read (larger reads are cheaper in trio).
    * ``flood_window`` with ``max_premature_resets`` / ``max_control_frames``: abuse budgets.
    * ``close_timeout``: how long a closing connection may spend flushing its GOAWAY.
    * ``enable_connect_protocol``: a server-role connection advertises
      SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441): the peer may open extended CONNECT
      streams (``:protocol websocket``).  On for links, off towards callers and endpoints.
    """

    max_concurrent_streams: int = 100
    stream_window: int = 64 * KIB
    connection_window: int = 1 * MIB
    max_header_list_size: int = 64 * KIB
    max_frame_size: int = 16 * KIB
    max_outbound_buffer: int = 256 * KIB
    read_size: int = 64 * KIB
    flood_window: float = 10.0
    max_premature_resets: int = 200
    max_control_frames: int = 1000
    close_timeout: float = 1.0
    enable_connect_protocol: bool = False

    def __post_init__(self) -> None:
        if not 1 <= self.max_concurrent_streams < 2**31:
            raise ValueError("max_concurrent_streams must be in [1, 2**31)")
        if not 1 <= self.stream_window < 2**31:
            raise ValueError("stream_window must be in [1, 2**31)")
        if not 65535 <= self.connection_window < 2**31:
            raise ValueError("connection_window must be in [65535, 2**31)")
        if self.max_header_list_size < 1024:
            raise ValueError("max_header_list_size must be at least 1024")
        if not 16 * KIB <= self.max_frame_size <= 16 * MIB - 1:
            raise ValueError("max_frame_size must be in [16 KiB, 16 MiB)")
        if self.max_outbound_buffer < 16 * KIB:
            raise ValueError("max_outbound_buffer must be at least 16 KiB")
        if self.read_size < 1:
            raise ValueError("read_size must be positive")
        if self.flood_window <= 0 or self.close_timeout <= 0:
            raise ValueError("flood_window and close_timeout must be positive")
        if self.max_premature_resets < 1 or self.max_control_frames < 1:
            raise ValueError("flood budgets must be positive")


@dataclass(frozen=True, slots=True)
class WindowCounter:
    """Count events per fixed time window; see the module's theory of operation."""

    window: float
    limit: int
    start: float = 0.0
    count: int = 0

    def record(self, now: float, n: int = 1) -> tuple[WindowCounter, bool]:
        """Add ``n`` events at ``now``; return the new counter and whether it is over limit."""
        if now >= self.start + self.window or now < self.start:
            new = WindowCounter(self.window, self.limit, now, n)
        else:
            new = WindowCounter(self.window, self.limit, self.start, self.count + n)
        return new, new.count > new.limit
