"""Where the routes' mirror copies run, and the tee that copies a request body for one.

Why here and not in the forwarder: a mirror copy outlives the request it copies (it is sent
once the caller's body has been read, and may still run when the caller has its answer), so
it belongs to a nursery of the gateway's, :class:`Mirrors`, not to the request's.  Everything
a mirror does is bounded: copies in flight (per route and per gateway; over: dropped, never
queued), bytes held (:class:`~gateway.routes.mirror_copy.MirrorBudget`), and time (each copy
runs under its route's ``mirror.timeout_s``).  Nothing of it reaches the caller: the copy's
answer is discarded, its failure only counted.

:class:`TeeBody` sits between the caller's body and the primary: each piece the primary reads
is handed on unchanged (the same object, at once) and fed to a bounded
:class:`~gateway.routes.mirror_copy.BodyCopy`; at the end of the body the copy is handed to
``on_complete`` (which starts the mirror).  A copy that goes over its cap is dropped on the
spot, and the primary reads on as if nothing happened.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import trio

from gateway.http.exchange import Body, Response
from gateway.http.message import Headers
from gateway.observe.metrics import GaugeFamily
from gateway.routes.mirror_copy import DROP_REASONS, BodyCopy, DropReason, MirrorBudget

log = logging.getLogger(__name__)

#: Mirrors in flight across every route (each route also has its own ``max_in_flight``).
MAX_MIRRORS = 256
#: ``[limits] mirror_buffer_budget``'s default (the config sets the live value).
DEFAULT_BUDGET = 16 * 1024 * 1024


class Mirrors:
    """The nursery mirror copies run in, and how many do (bounded; over the cap: dropped)."""

    def __init__(self, *, limit: int = MAX_MIRRORS, budget: int = DEFAULT_BUDGET) -> None:
        self.limit = limit
        self.budget = MirrorBudget(budget)
        self.in_flight = 0
        self.per_route: dict[str, int] = {}
        self.started = 0
        self.drops: dict[DropReason, int] = dict.fromkeys(DROP_REASONS, 0)
        self.failed = 0
        self.timed_out = 0
        self._nursery: trio.Nursery | None = None

    @property
    def dropped(self) -> int:
        """Copies not sent, whatever the reason."""
        return sum(self.drops.values())

    def note_drop(self, reason: DropReason) -> None:
        self.drops[reason] += 1

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the mirrors' nursery until cancelled (started in the gateway's root nursery)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                nursery.cancel_scope.cancel()

    def spawn(
        self,
        route: str,
        cap: int,
        run: Callable[[], Awaitable[None]],
        *,
        timeout_s: float = 10.0,
        done: Callable[[], None] | None = None,
    ) -> bool:
        """Start ``run`` (bounded by ``timeout_s``) unless a cap is reached or nothing
        serves; False: dropped.  ``done`` is called when the copy ends or is dropped (it
        gives the copy's bytes back)."""
        nursery = self._nursery
        busy = self.per_route.get(route, 0)
        if nursery is None or self.in_flight >= self.limit or busy >= cap:
            self.note_drop("stopped" if nursery is None else "in_flight")
            if done is not None:
                done()
            return False
        self.in_flight += 1
        self.per_route[route] = busy + 1
        self.started += 1
        nursery.start_soon(self._run, route, run, timeout_s, done)
        return True

    async def _run(
        self,
        route: str,
        run: Callable[[], Awaitable[None]],
        timeout_s: float,
        done: Callable[[], None] | None,
    ) -> None:
        try:
            with trio.move_on_after(timeout_s) as scope:
                await run()
            if scope.cancelled_caught:
                self.timed_out += 1
                log.debug("mirror of %s timed out after %ss", route, timeout_s)
        except Exception as exc:  # a mirror's failure is never the caller's
            self.failed += 1
            log.debug("mirror of %s failed: %s", route, type(exc).__name__)
        finally:
            if done is not None:
                done()
            self.in_flight -= 1
            left = self.per_route[route] - 1
            if left:
                self.per_route[route] = left
            else:
                del self.per_route[route]


def mirror_gauges(mirrors: Mirrors) -> Iterator[GaugeFamily]:
    """Read at scrape time: the data path only bumps plain integers."""
    yield GaugeFamily(
        "isthmus_route_mirror_started_total",
        "Mirror copies started by routes.",
        (),
        (((), float(mirrors.started)),),
        kind="counter",
    )
    yield GaugeFamily(
        "isthmus_route_mirror_dropped_total",
        "Mirror copies not sent, by reason (the caller's own request is never affected).",
        ("reason",),
        tuple(((reason,), float(mirrors.drops[reason])) for reason in DROP_REASONS),
        kind="counter",
    )
    yield GaugeFamily(
        "isthmus_route_mirror_failed_total",
        "Mirror copies that failed (error) or ran out of their mirror.timeout_s (timeout).",
        ("reason",),
        ((("error",), float(mirrors.failed)), (("timeout",), float(mirrors.timed_out))),
        kind="counter",
    )
    yield GaugeFamily(
        "isthmus_route_mirrors_in_flight",
        "Mirror copies running now.",
        (),
        (((), float(mirrors.in_flight)),),
    )
    yield GaugeFamily(
        "isthmus_route_mirror_buffer_bytes",
        "Request body bytes held for mirror copies now (limit: [limits] mirror_buffer_budget).",
        (),
        (((), float(mirrors.budget.held)),),
    )


class DiscardWriter:
    """Where a mirror's answer goes: nowhere."""

    head_sent = False

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None:
        self.head_sent = True

    async def send_data(self, data: bytes) -> None:
        return None

    async def send_end(self, trailers: Headers = ()) -> None:
        return None


class HeldBody:
    """A complete copied body, handed out piece by piece as it came (with its trailers)."""

    def __init__(self, pieces: tuple[bytes, ...], trailers: Headers) -> None:
        self._pieces = pieces
        self._next = 0
        self._offset = 0  # into the next piece, when a reader asked for less than it
        self.trailers = trailers

    def held_whole(self, limit: int) -> bytes | None:
        """The whole body at once (a link tunnel sends it with the request's HEADERS), when
        nothing was read yet, it has no trailers and is at most ``limit`` bytes."""
        pieces = self._pieces
        if self._next or self._offset or self.trailers or sum(map(len, pieces)) > limit:
            return None
        return pieces[0] if len(pieces) == 1 else b"".join(pieces)

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._next >= len(self._pieces):
            return b""
        piece = self._pieces[self._next]
        start = self._offset
        stop = len(piece) if max_bytes is None else min(len(piece), start + max_bytes)
        if stop == len(piece):
            self._next += 1
            self._offset = 0
        else:
            self._offset = stop
        return piece if start == 0 and stop == len(piece) else piece[start:stop]


class TeeBody:
    """The caller's body as the primary reads it, with a bounded copy kept on the side.

    The primary gets every piece unchanged and at once: the copy only appends a reference
    (or gives up).  ``on_complete`` runs (synchronously: it only starts a task) when the body
    ended with the copy whole; :meth:`abandon` drops a copy the primary left unfinished."""

    __slots__ = ("_copy", "_inner", "_mirrors", "_on_complete")

    def __init__(
        self,
        inner: Body,
        copy: BodyCopy,
        mirrors: Mirrors,
        on_complete: Callable[[BodyCopy], None],
    ) -> None:
        self._inner = inner
        self._copy: BodyCopy | None = copy
        self._mirrors = mirrors
        self._on_complete = on_complete

    @property
    def trailers(self) -> Headers:
        return self._inner.trailers

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        data = await self._inner.receive_some(max_bytes)
        copy = self._copy
        if copy is not None:
            if data:
                reason = copy.feed(data)
                if reason is not None:
                    self._copy = None
                    self._mirrors.note_drop(reason)
            else:
                self._copy = None
                if copy.finish(self._inner.trailers):
                    self._on_complete(copy)
        return data

    def abandon(self) -> None:
        """The primary is done with the body: a copy with every declared byte is sent (the
        endpoint answered before the body's end was read), one still short of it dropped."""
        copy, self._copy = self._copy, None
        if copy is None:
            return
        if copy.whole:
            copy.finish()
            self._on_complete(copy)
        elif copy.drop("body_unfinished") is not None:
            self._mirrors.note_drop("body_unfinished")
