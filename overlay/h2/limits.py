"""Limits of one HTTP/2 connection and the pure flood counters that enforce them.

Why a separate, pure module: the numbers are policy (the defaults of docs/limits.md,
overridable in config) and the flood decision is arithmetic on timestamps.  Keeping both free
of trio and h2 lets them be unit-tested directly and read in one place.

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

Going over either limit closes the connection with GOAWAY ENHANCE_YOUR_CALM, at the frame
that crossed it: a read is handed to h2 one frame at a time, and nothing after that frame is
looked at.

Header blocks are bounded before h2 buffers them (``h2_data.FrameSplitter``), well inside
h2's own backstop of 64 CONTINUATION frames: at most ``max_continuation_frames`` CONTINUATION
frames and ``max_header_block_bytes`` (twice the header list limit) of raw block per header
block, checked as each frame header arrives; crossing either is GOAWAY ENHANCE_YOUR_CALM.  A
block within those bounds is decoded with HPACK up to ``max_decoded_header_list``: a decoded
list over ``max_header_list_size`` but under that refuses its stream only (a request gets 431,
anything else a stream reset), since the block was decoded whole and the HPACK table shared by
every stream is intact; a list that would decode past it (an HPACK bomb) stops the decoder
half-way, which leaves the table unusable: GOAWAY ENHANCE_YOUR_CALM.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from overlay.h2.buffer_budget import BufferBudget
from overlay.h2.window_policy import WindowSettings

KIB = 1024
MIB = 1024 * KIB

#: The protocol engines an ``H2Connection`` can run (``overlay/h2/engine.py``).
EngineName = Literal["h2", "lean"]


@dataclass(frozen=True, slots=True)
class H2Limits:
    """Every bound one HTTP/2 connection enforces.  Defaults: docs/limits.md.

    Why each exists:

    * ``max_concurrent_streams``: advertised in SETTINGS; a new stream above it is refused
      with REFUSED_STREAM (retryable), so one peer cannot pin unbounded handler tasks.
    * ``stream_window`` / ``connection_window``: our receive windows.  A stream's window is
      credited only when its consumer takes the data, so it *is* that stream's receive buffer
      bound; the connection window is credited on receipt (``credit.py``) and bounds only
      bytes in flight, so streams whose consumers stall never stall their neighbours.
    * ``max_header_list_size``: decoded header list bound, advertised in SETTINGS; a request
      over it gets 431 (see the module docstring for the bounds derived from it).
    * ``max_continuation_frames``: CONTINUATION frames per header block (CONTINUATION flood).
    * ``max_frame_size``: largest frame we accept (RFC default 16 KiB; larger frames mean fewer
      frames per byte on bulk tunnels, at the cost of a larger frame buffer per connection).
    * ``max_outbound_buffer``: bytes queued for the transport; above it senders wait and the
      reader stops reading, so a peer that never reads cannot grow our memory.
    * ``read_size``: bytes asked of the transport per read (larger reads are cheaper in trio).
    * ``flood_window`` with ``max_premature_resets`` / ``max_control_frames``: abuse budgets.
    * ``close_timeout``: how long a closing connection may spend flushing its GOAWAY.
    * ``count_peer_resets``: whether a stream the peer resets before we finished it counts
      against ``max_premature_resets`` (Rapid Reset).  On towards callers.  Off on links: the
      origin gateway forwards its callers' resets as normal traffic and enforces each caller's
      budget on that caller's own connection, so a reset on a link is not the peer gateway's
      abuse; what the peer gateway itself does wrong (streams over our limit, malformed or
      oversize header blocks) still counts.
    * ``enable_connect_protocol``: a server-role connection advertises
      SETTINGS_ENABLE_CONNECT_PROTOCOL = 1 (RFC 8441): the peer may open extended CONNECT
      streams (``:protocol websocket``).  On for links, off towards callers and endpoints.
    * ``engine``: the protocol state machine (``overlay/h2/engine.py``): ``"lean"`` (our
      codec) for links, ``"h2"`` (python-hyper) towards callers; None: the driver's default.
    """

    max_concurrent_streams: int = 100
    stream_window: int = 64 * KIB
    connection_window: int = 1 * MIB
    max_header_list_size: int = 64 * KIB
    max_continuation_frames: int = 16
    max_frame_size: int = 16 * KIB
    max_outbound_buffer: int = 256 * KIB
    read_size: int = 64 * KIB
    flood_window: float = 10.0
    max_premature_resets: int = 200
    max_control_frames: int = 1000
    close_timeout: float = 1.0
    enable_connect_protocol: bool = False
    count_peer_resets: bool = True
    stream_window_max: int | None = None
    window_budget: BufferBudget | None = field(default=None, compare=False, repr=False)
    engine: EngineName | None = None

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
        if not 0 <= self.max_continuation_frames <= 32:
            raise ValueError("max_continuation_frames must be in [0, 32] (h2 stops at 64)")
        if self.stream_window_max is not None and not (
            self.stream_window <= self.stream_window_max < 2**31
        ):
            raise ValueError("stream_window_max must be in [stream_window, 2**31)")

    @property
    def window_settings(self) -> WindowSettings:
        """What every stream's receive window policy works with."""
        top = self.stream_window if self.stream_window_max is None else self.stream_window_max
        return WindowSettings(initial=self.stream_window, maximum=top)

    @property
    def max_header_block_bytes(self) -> int:
        """Raw (HPACK-encoded) bytes of one header block: HEADERS plus its CONTINUATIONs.
        Encoded fields are never much larger than decoded ones, so a block over twice the
        list limit cannot be a request we would serve."""
        return 2 * self.max_header_list_size

    @property
    def max_decoded_header_list(self) -> int:
        """Where HPACK decoding stops (HPACK bomb): four times the advertised list limit,
        so an oversize but honest block is still decoded whole and refused alone."""
        return 4 * self.max_header_list_size


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
