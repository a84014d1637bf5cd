"""An HTTP/2 connection (python-hyper h2) driven by trio, with real flow control and limits.

Why: a link between gateways is one long-lived HTTP/2 connection carrying many tunnels.  h2
is sans-IO; this module is the thin trio driver around it, plus the policy h2 leaves to its
user: when to acknowledge data, how much to buffer, when a peer is abusive, when it is dead.

Theory of operation
-------------------
One h2 state machine, mutated only synchronously (trio is single-threaded, so no lock): by the
reader task (events from the peer), by stream methods (send/ack/reset), by the liveness task
(PING).  Every mutation is followed by ``_pump()``, which moves h2's output into ``_outbuf``
and wakes the writer task.  DATA frames bypass h2's framing and copies (``h2_data.py``): a
sender appends them to ``_outbuf`` itself after h2 has checked and counted them, and the
reader cuts DATA out of the inbound bytes before h2's frame buffer.  Three tasks live in the
nursery that ``serve()`` owns:

* reader: waits until the outbound buffer is under twice ``max_outbound_buffer`` (a peer that
  never reads cannot make us queue PING/SETTINGS acks or RSTs without bound), reads, feeds h2
  one frame at a time and dispatches that frame's events to streams before the next, counts
  floods (so the GOAWAY for a crossed budget goes out at the frame that crossed it);
* writer: sends ``_outbuf`` to the transport and wakes senders waiting for room;
* liveness (optional): the pure core in ``liveness.py`` decides PING times and the deadline.

Plus one handler task per accepted stream (server role).  Flow control: a stream's receive
buffer only shrinks when its consumer reads, and only then is its *stream* window credited, so
a peer never has more than a stream window of unconsumed data in one stream here; the
*connection* window is credited as data arrives into a stream's buffer (``credit.py``), so a
stream whose consumer stalls never stalls the others.  Senders
wait for the peer's window *and* for outbound room.

Roles are clean: HTTP/2 streams are opened by the client only.  The dialing side is the client
and calls ``open_stream``; the accepting side is the server and gets each stream in ``handler``.
An acceptor that wants to open tunnels towards the dialer does so on a second connection --
which may run *inside* a CONNECT stream of the first (an H2Stream is a trio Stream), so an
outbound-only site still gets traffic in both directions over the one link it dialed.

Closing: ``_begin_close(reason)`` records why (``close_reason``), fails every stream with a
``ConnectionGone`` (``LinkDown`` for a missed PING, ``PeerMisbehaved`` for protocol errors and
floods), optionally lets the writer flush a GOAWAY for up to ``close_timeout``, then cancels the
nursery; ``serve()`` returns (it does not raise for connection-level failures: read
``close_reason`` or ``await wait_closed()``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable

import trio

from foundation.errors import (
    H2_ENHANCE_YOUR_CALM,
    H2_INTERNAL_ERROR,
    H2_NO_ERROR,
    H2_PROTOCOL_ERROR,
    H2_REFUSED_STREAM,
)
from overlay.h2.engine import EngineRefused, EngineStreamClosed, PeerProtocolError, ProtocolEngine
from overlay.h2.engine_h2 import HyperEngine
from overlay.h2.engine_lean import LeanEngine
from overlay.h2.limits import EngineName, H2Limits, WindowCounter
from overlay.h2.liveness import (
    DeclareDown,
    LivenessPolicy,
    LivenessState,
    SendPing,
    on_ack,
    poll,
    start,
)
from overlay.h2.setup import H2ConnectionStatistics
from overlay.h2.stream import (
    ConnectionGone,
    H2Stream,
    HeaderList,
    LinkDown,
    PeerMisbehaved,
    StreamReset,
)
from overlay.h2.stream_io import H2StreamIO

log = logging.getLogger(__name__)

Handler = Callable[[H2Stream], Awaitable[None]]

DEFAULT_ENGINE: EngineName = "h2"
"""The protocol engine of a connection whose limits name none (see ``engine.py``)."""


def new_engine(name: EngineName, *, client_side: bool, limits: H2Limits) -> ProtocolEngine:
    """The protocol state machine called ``name`` (``engine.py``), set up for ``limits``."""
    if name == "lean":
        return LeanEngine(client_side=client_side, limits=limits)
    return HyperEngine(client_side=client_side, limits=limits)


def _why(exc: BaseException) -> str:
    """A transport failure with what caused it: a TLS alert from the peer (say it rejected our
    certificate) hides in ``__cause__`` behind "the TLS stream is broken"."""
    cause = exc.__cause__
    return f"{exc!r}" if cause is None else f"{exc!r} ({cause})"


class H2Connection(H2StreamIO):
    """One HTTP/2 connection over a trio Stream (plain TCP in tests, an mTLS link in use)."""

    def __init__(
        self,
        transport: trio.abc.Stream,
        *,
        client_side: bool,
        handler: Handler | None = None,
        limits: H2Limits | None = None,
        ping_interval: float | None = 10.0,
        ping_timeout: float = 5.0,
        idle_timeout: float | None = None,
        ping_at_once: bool = False,
        first_ping_timeout: float | None = None,
        on_close: Callable[[ConnectionGone], None] | None = None,
    ) -> None:
        """Wrap ``transport`` (already authenticated, e.g. a trio.SSLStream with ALPN h2).

        ``client_side``: the dialer is the client and opens streams; the acceptor is the
        server and needs ``handler``, run once per accepted stream in this connection's
        nursery.  ``limits``: see ``H2Limits``.  ``ping_interval``/``ping_timeout``: liveness
        (None disables); a silent peer is declared down (``LinkDown``) at most
        ``ping_interval + ping_timeout`` seconds after it went silent.  ``idle_timeout``: close
        after that long without an open stream (None: never; links rely on PING instead).
        ``ping_at_once``: send the first PING as soon as the connection serves (links do, so
        :meth:`wait_ping_answered` tells early that the peer really talks HTTP/2 to us).
        ``first_ping_timeout``: a longer deadline for the first PING (a peer still starting up;
        see ``liveness.py``), which lengthens the detection bound to match.
        ``on_close(reason)`` runs just before the transport is closed (a listener uses it to
        close a caller's socket abortively after an error).
        """
        if client_side == (handler is not None):
            raise ValueError("a server-role connection needs a handler; a client-role one none")
        self.client_side = client_side
        self.limits = limits if limits is not None else H2Limits()
        self._transport = transport
        self._handler = handler
        self._liveness_policy = (
            None
            if ping_interval is None
            else LivenessPolicy(ping_interval, ping_timeout, first_ping_timeout)
        )
        self._liveness: LivenessState | None = None
        #: The liveness task's sleep while a PING is outstanding: an ack moves its deadline to
        #: the next PING time, so an answered PING costs one wake-up, not two (see below).
        self._liveness_sleep: trio.CancelScope | None = None
        self._liveness_wakeups = 0  # times the liveness task woke (tests, bench_ping.py)
        self._ping_at_once = ping_at_once
        self._ping_answered = trio.Event()
        self._idle_timeout = idle_timeout
        self._on_close = on_close
        self._idle_since = 0.0
        lim = self.limits
        self.engine_name: EngineName = lim.engine or DEFAULT_ENGINE
        self._engine = new_engine(self.engine_name, client_side=client_side, limits=lim)
        self._streams: dict[int, H2Stream] = {}
        self._outbuf = bytearray()
        self._in_flight = 0
        self._max_pending = 0
        self._write_lot = trio.lowlevel.ParkingLot()  # writer waits for output
        self._room_lot = trio.lowlevel.ParkingLot()  # senders/reader wait for window or room
        self._slot_lot = trio.lowlevel.ParkingLot()  # openers wait for a stream slot
        self._resets = WindowCounter(lim.flood_window, lim.max_premature_resets)
        self._controls = WindowCounter(lim.flood_window, lim.max_control_frames)
        self._nursery: trio.Nursery | None = None
        self._started = False
        self._peer_settings_seen = False
        self._draining = False
        self._closing = False
        self._close_reason: ConnectionGone | None = None
        self._closed = trio.Event()
        self._bytes_received = 0
        self._bytes_sent = 0
        self._streams_opened = 0
        self._streams_refused = 0
        self._premature_resets = 0
        self._control_frames = 0
        self._flow_stalls = 0  # sends that waited for the peer's flow-control window
        self._abuse_goaway = False  # we closed it with GOAWAY ENHANCE_YOUR_CALM (a flood)
        self._handlers_running = 0
        self._handler_scopes: dict[int, trio.CancelScope] = {}

    # -- lifetime ---------------------------------------------------------------------------

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the connection until it closes; ``started()`` once the preface is queued."""
        if self._started:
            raise RuntimeError("serve() may run once")
        self._started = True
        self._engine.start()
        self._pump()
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._write_loop)
                nursery.start_soon(self._read_loop)
                if self._liveness_policy is not None:
                    nursery.start_soon(self._liveness_loop, self._liveness_policy)
                if self._idle_timeout is not None:
                    nursery.start_soon(self._idle_loop, self._idle_timeout)
                task_status.started()
        finally:
            self._finish(ConnectionGone("connection closed"))
            if self._on_close is not None and self._close_reason is not None:
                self._on_close(self._close_reason)
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(self._transport)

    async def aclose(self, error_code: int = H2_NO_ERROR) -> None:
        """Send GOAWAY (flushed for at most ``close_timeout``) and close; idempotent."""
        if not self._started:
            self._started = True
            self._finish(ConnectionGone("closed before serving", error_code=error_code))
            await trio.aclose_forcefully(self._transport)
            return
        self._begin_close(
            ConnectionGone("closed locally", error_code=error_code), goaway=error_code
        )
        await self._closed.wait()

    async def drain(self) -> None:
        """Take no new streams and return once the open ones have finished.

        Graceful close is ``with trio.move_on_after(grace): await conn.drain()`` then
        ``await conn.aclose()``.  Why not GOAWAY first, as RFC 9113 suggests: h2 4.x sends and
        accepts nothing but GOAWAY once one was sent or received, so streams could not finish.
        While draining, a peer's new requests are refused with REFUSED_STREAM (safe to retry
        elsewhere) and ``open_stream`` raises ``ConnectionGone``.
        """
        self._draining = True
        await trio.lowlevel.checkpoint()
        while self._streams and not self._closing:
            await self._slot_lot.park()

    async def wait_closed(self) -> ConnectionGone:
        """Wait until the connection is over; return why (``LinkDown``, ``PeerMisbehaved``...)."""
        await self._closed.wait()
        assert self._close_reason is not None
        return self._close_reason

    @property
    def ping_answered(self) -> bool:
        """True once the peer has answered one of our PINGs (never without liveness)."""
        return self._ping_answered.is_set()

    async def wait_ping_answered(self) -> None:
        """Wait until the peer has answered one of our PINGs (the caller bounds the time)."""
        await self._ping_answered.wait()

    @property
    def close_reason(self) -> ConnectionGone | None:
        return self._close_reason

    @property
    def is_closing(self) -> bool:
        """True once the connection takes no new streams (closing, closed or draining)."""
        return self._closing or self._draining

    def statistics(self) -> H2ConnectionStatistics:
        state = self._liveness
        reason = self._close_reason
        return H2ConnectionStatistics(
            client_side=self.client_side,
            open_streams=len(self._streams),
            outbound_buffered=self._pending,
            max_outbound_buffered=self._max_pending,
            bytes_received=self._bytes_received,
            bytes_sent=self._bytes_sent,
            streams_opened=self._streams_opened,
            streams_refused=self._streams_refused,
            handlers_running=self._handlers_running,
            premature_resets=self._premature_resets,
            control_frames=self._control_frames,
            flow_control_stalls=self._flow_stalls,
            abuse_goaway=self._abuse_goaway,
            last_ping_rtt=None if state is None else state.last_rtt,
            closed=self._closed.is_set(),
            close_reason=None if reason is None else f"{type(reason).__name__}: {reason}",
        )

    # -- called by the event dispatcher (h2_events.py) ---------------------------------------

    def _accept_stream(self, stream_id: int, headers: HeaderList, now: float) -> H2Stream | None:
        """A request arrived (server role): start its handler, or refuse it."""
        if self.is_closing or len(self._streams) >= self.limits.max_concurrent_streams:
            self._engine.reset_stream(stream_id, H2_REFUSED_STREAM)
            self._count_refused(now)
            return None
        stream = H2Stream(self, stream_id, client_side=False, request_headers=headers)
        self._streams[stream_id] = stream
        self._streams_opened += 1
        self._idle_since = now
        assert self._nursery is not None and self._handler is not None
        self._nursery.start_soon(self._run_handler, self._handler, stream)
        return stream

    def _refuse_oversized(
        self, stream_id: int, size: int, limit: int, stream_ended: bool, now: float
    ) -> None:
        """A request whose header list is over our limit (decoded whole, so the connection
        is fine): answer 431 on its stream, ask the peer to stop sending its body (RST_STREAM
        NO_ERROR after a complete response, RFC 9113 section 8.1), and count it against the
        premature-reset budget like any request that never reached a handler."""
        log.debug("stream %d: header list of %d bytes over %d: 431", stream_id, size, limit)
        body = b"431 Request Header Fields Too Large: header list of %d bytes, limit %d\n" % (
            size,
            limit,
        )
        engine = self._engine
        head = [(b":status", b"431"), (b"content-type", b"text/plain; charset=utf-8")]
        with contextlib.suppress(EngineRefused, EngineStreamClosed):  # e.g. the peer reset it
            if engine.send_window(stream_id) >= len(body):
                length = (b"content-length", b"%d" % len(body))
                engine.send_headers(stream_id, [*head, length], end_stream=False)
                engine.send_data(self._outbuf, stream_id, body, end_stream=True)
                self._queued()
            else:
                length = (b"content-length", b"0")
                engine.send_headers(stream_id, [*head, length], end_stream=True)
            if not stream_ended:
                engine.reset_stream(stream_id, H2_NO_ERROR)
        self._note_premature_reset(now)

    def _count_refused(self, now: float) -> None:
        """A new stream refused over our limit: it cost a decode and did no work."""
        self._streams_refused += 1
        self._note_premature_reset(now)

    def _note_malformed(self, stream_id: int, why: str, now: float) -> None:
        """A header block that decoded but is not a well-formed message (the engine reset its
        stream, PROTOCOL_ERROR): fail the stream; a request that never reached a handler
        still cost us a decode, so it counts against the peer's premature-reset budget."""
        log.debug("stream %d reset: malformed header block: %s", stream_id, why)
        if (stream := self._streams.get(stream_id)) is not None:
            self._stream_was_reset(stream, H2_PROTOCOL_ERROR, False, now)
        else:
            self._note_premature_reset(now)

    def _stream_was_reset(
        self, stream: H2Stream, error_code: int, remote: bool, now: float
    ) -> None:
        # Rapid Reset / MadeYouReset accounting; on a link only what the peer gateway itself
        # got wrong (a stream we reset because of it), not the resets it forwards.
        counted = self.limits.count_peer_resets or not remote
        if not self.client_side and not stream.local_ended and counted:
            self._note_premature_reset(now)
        stream._on_reset(error_code, remote=remote)
        if (scope := self._handler_scopes.get(stream.stream_id)) is not None:
            scope.cancel()
        self._forget(stream)

    def _note_premature_reset(self, now: float) -> None:
        self._premature_resets += 1
        self._resets, over = self._resets.record(now)
        if over:
            self._calm_down("too many premature stream resets (rapid reset)")

    def _note_control_frame(self, now: float) -> None:
        self._control_frames += 1
        self._controls, over = self._controls.record(now)
        if over:
            self._calm_down("control frame flood")

    def _calm_down(self, why: str) -> None:
        log.warning("closing HTTP/2 connection: %s", why)
        self._abuse_goaway = True
        self._begin_close(
            PeerMisbehaved(why, error_code=H2_ENHANCE_YOUR_CALM), goaway=H2_ENHANCE_YOUR_CALM
        )

    def _on_ping_ack(self, payload: bytes, now: float) -> None:
        if self._liveness is not None:
            self._liveness = on_ack(self._liveness, payload, now)
            if self._liveness.answered:
                self._ping_answered.set()
            if self._liveness.outstanding is None and self._liveness_sleep is not None:
                self._liveness_sleep.deadline = self._liveness.next_ping_at

    def _on_goaway(self, error_code: int) -> None:
        # h2 refuses to send anything after a GOAWAY, so streams cannot drain: close now.
        cls = ConnectionGone if error_code == H2_NO_ERROR else PeerMisbehaved
        self._begin_close(cls(f"peer sent GOAWAY {error_code:#x}", error_code=error_code))

    # -- tasks ------------------------------------------------------------------------------

    async def _run_handler(self, handler: Handler, stream: H2Stream) -> None:
        """Run one request's handler.  A peer reset cancels it (see ``_stream_was_reset``):
        its work is unwanted, and this keeps the number of live handlers near the number of
        open streams even under Rapid Reset."""
        self._handlers_running += 1
        try:
            if stream.reset_by_peer:
                # Reset in the same read as its request (a forwarded rapid reset): the reset
                # found no handler to cancel, and nobody is left to answer.
                return
            with trio.CancelScope() as scope:
                self._handler_scopes[stream.stream_id] = scope
                await handler(stream)
        except (StreamReset, ConnectionGone):
            pass  # the peer or the link went away: nobody is left to answer
        except Exception:
            log.exception("stream handler failed on stream %d", stream.stream_id)
            stream.reset(H2_INTERNAL_ERROR)
        finally:
            self._handlers_running -= 1
            self._handler_scopes.pop(stream.stream_id, None)
            stream.close_now()

    async def _read_loop(self) -> None:
        transport, read_size = self._transport, self.limits.read_size
        while not self._closing:
            # Data senders stop at max_outbound_buffer; only answers to the peer's control
            # frames can push past it.  Stopping to read at twice the bound bounds a flooder
            # that never reads, yet two peers moving bulk data both ways never both stop
            # reading (which could deadlock them on full TCP buffers).
            while self._pending > 2 * self.limits.max_outbound_buffer and not self._closing:
                await self._room_lot.park()
            try:
                data = await transport.receive_some(read_size)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._begin_close(ConnectionGone(f"receive failed: {_why(exc)}"), flush=False)
                return
            if not data:
                self._begin_close(ConnectionGone("peer closed the transport"), flush=False)
                return
            self._bytes_received += len(data)
            try:
                # Frame by frame: a frame that crosses a budget closes the connection before
                # the engine has seen (answered, opened a stream for) any frame after it.
                self._engine.receive(data, self, trio.current_time())
            except PeerProtocolError as exc:
                self._pump()  # the engine queued a GOAWAY carrying ``exc.error_code``
                self._begin_close(PeerMisbehaved(str(exc), error_code=exc.error_code))
                return
            self._pump()

    async def _write_loop(self) -> None:
        while True:
            while not self._outbuf:
                await self._write_lot.park()
            chunk, self._outbuf = self._outbuf, bytearray()  # swap, do not copy
            self._in_flight = len(chunk)
            try:
                await self._transport.send_all(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self._begin_close(ConnectionGone(f"send failed: {_why(exc)}"), flush=False)
                return
            self._in_flight = 0
            self._bytes_sent += len(chunk)
            self._room_lot.unpark_all()

    async def _liveness_loop(self, policy: LivenessPolicy) -> None:
        """Send PINGs and enforce their deadline (the timing is ``liveness.py``'s).

        Cost: at rest a link does nothing else, so this is a gateway's idle CPU (one link per
        peer).  While a PING is outstanding the task sleeps until its deadline in a cancel
        scope whose deadline the ack moves to the next PING time (``_on_ping_ack``): an
        answered PING wakes this task once (to send the next one), not also at the deadline.
        """
        self._liveness = start(policy, trio.current_time(), ping_at_once=self._ping_at_once)
        while True:
            self._liveness, action = poll(self._liveness, policy, trio.current_time())
            if isinstance(action, SendPing):
                self._engine.ping(action.payload)
                self._pump()
            elif isinstance(action, DeclareDown):
                bound = policy.detection_bound
                waited = (
                    policy.first_timeout if self._liveness.sequence == 1 else policy.ping_timeout
                )
                why = f"PING unanswered for {waited}s (detection bound {bound}s)"
                log.warning("link down: %s", why)
                self._begin_close(LinkDown(why), flush=False)
                return
            else:
                with trio.CancelScope(deadline=action.when) as sleep:
                    self._liveness_sleep = sleep
                    await trio.sleep_forever()
                self._liveness_sleep = None
                self._liveness_wakeups += 1

    async def _idle_loop(self, idle_timeout: float) -> None:
        """Close (GOAWAY NO_ERROR) after ``idle_timeout`` seconds without an open stream."""
        self._idle_since = trio.current_time()
        while True:
            if self._streams:
                await trio.sleep(idle_timeout)  # re-check later; a busy link is never idle
                continue
            deadline = self._idle_since + idle_timeout
            if trio.current_time() >= deadline:
                why = f"idle for {idle_timeout}s"
                self._begin_close(ConnectionGone(why), goaway=H2_NO_ERROR)
                return
            await trio.sleep_until(deadline)

    # -- internals --------------------------------------------------------------------------

    def _begin_close(
        self, reason: ConnectionGone, *, goaway: int | None = None, flush: bool = True
    ) -> None:
        if self._closing:
            return
        self._closing = True
        self._close_reason = reason
        if goaway is not None:
            self._engine.close_connection(goaway)
            self._pump()
        for stream in list(self._streams.values()):
            stream._on_gone(reason)
        self._streams.clear()
        for lot in (self._room_lot, self._slot_lot, self._write_lot):
            lot.unpark_all()
        if self._nursery is not None:
            if flush:
                try:
                    self._nursery.start_soon(self._flush_then_stop, self._nursery)
                except RuntimeError:  # the nursery is already winding down: nothing to flush
                    self._nursery.cancel_scope.cancel()
            else:
                self._nursery.cancel_scope.cancel()

    async def _flush_then_stop(self, nursery: trio.Nursery) -> None:
        with trio.move_on_after(self.limits.close_timeout):
            while self._pending:
                await self._room_lot.park()
        nursery.cancel_scope.cancel()

    def _finish(self, default: ConnectionGone) -> None:
        if not self._closing:
            self._closing = True
            self._close_reason = default
            for stream in list(self._streams.values()):
                stream._on_gone(default)
            self._streams.clear()
        if self._close_reason is None:
            self._close_reason = default
        self._closed.set()
