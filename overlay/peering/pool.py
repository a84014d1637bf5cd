"""A peer's link pool: new streams go to the least loaded of its links; more links are dialed
as they fill up, idle extra ones are drained and closed.

The decisions are the pure :mod:`overlay.peering.link_pool`; this module reads the links'
loads and acts.

* **Which links.**  The links this side sends on: the primary one (the one
  :meth:`~overlay.peering.links.PeerLinks.outbound` names, which also carries federation) and
  the extra links this side dialed.  Extra links the *peer* dialed serve the peer's streams;
  this side sends on them only while it has no link of its own up, so closing them stays the
  peer's business.
* **Opening.**  Only a side that dials a peer (``dial = true``) opens extra links to it, with
  the same dial code, timeout and backoff as its primary link; an accept-only side keeps one
  link (the peer's extra links add slots for the peer's traffic, not its own).  The request
  that finds every link over the high-water mark sets ``want_link``; :func:`run_pool` dials.
* **Waiting.**  A stream that finds every link full waits for a slot on the least loaded one
  and, at the same time, for a change of the links (one came up with room, or one went);
  after a change it looks again.  Only one link's open is ever under way for one stream, so
  a request is never sent twice.  The caller's deadline bounds the wait, as before.
* **Closing.**  Every ``idle_close_s / 2`` the pool looks for an extra link that has had no
  stream since the previous look; it is drained (no new streams on either connection) and
  closed once its streams have finished.

Liveness and failover stay per link: each link has its own PING deadline, and the peer is down
only when every link is (``outbound()`` falls back to any live extra link).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import trio

from foundation.errors import IsthmusError
from overlay.h2.connection import H2Connection
from overlay.h2.stream import ConnectionGone, H2Stream, HeaderInput
from overlay.link.link import Link
from overlay.peering.link_pool import (
    LinkLoad,
    PoolPolicy,
    least_loaded,
    pick,
    to_close,
    want_more,
)
from overlay.peering.links import ExtraLink, PeerLinks

log = logging.getLogger("isthmus.peering")

#: A drained link whose streams have not finished by then is closed anyway.  Streams end by
#: their own timeouts long before (the stream idle timeout, the longest stream duration).
DRAIN_GRACE_S = 600.0
DRAIN_POLL_S = 0.5


class StreamOpener(Protocol):
    """What a peer cluster opens its streams on: one link's connection, or a peer's pool."""

    async def open_stream(self, headers: HeaderInput, *, end_stream: bool = False) -> H2Stream: ...

    async def peer_accepts_extended_connect(self) -> bool: ...


def load_of(conn: H2Connection, link: ExtraLink | None, opening: int = 0) -> LinkLoad:
    """One link's load: its open streams (and ``opening``, about to be) and the peer's stream
    limit on it."""
    # ``stream_room``: the open streams and the engine's limit on our outbound streams (the
    # peer's SETTINGS_MAX_CONCURRENT_STREAMS, ours until the peer's arrive), without building
    # the whole statistics per request.
    in_use, limit = conn.stream_room
    return LinkLoad(
        open_streams=in_use + opening,
        max_streams=max(1, limit),
        extra=link is not None,
        draining=link is not None and link.draining,
        idle_since=None if link is None else link.idle_since,
        # a dialer's reverse connection rides on a stream of its outer (client) connection
        fixed_streams=1 if link is not None and link.dialed else 0,
    )


class PeerPool:
    """Opens a stream on the best of a peer's links; see the module docstring."""

    def __init__(self, state: PeerLinks, policy: PoolPolicy) -> None:
        self.state = state
        self.policy = policy
        self._opening: dict[int, int] = {}  # id(connection) -> our opens not yet sent

    def links(self) -> list[tuple[ExtraLink | None, H2Connection]]:
        """The links this side sends on (None: the primary one), primary first.  A worker
        has no primary link: the worker link its dial loop keeps (the *anchor*) plays that
        part, so the pool never drains it as idle."""
        state = self.state
        live = state.live()
        own: list[tuple[ExtraLink | None, H2Connection]] = [(None, live[0][1])] if live else []
        if not own:
            anchor = next((x for x in state.extras if x.anchor and x.live), None)
            if anchor is not None:
                own = [(None, anchor.client)]
        own += [(x, x.client) for x in state.extras if x.dialed and x.live and not x.anchor]
        if not own:  # only the peer's extra links are left: still up
            own = [(x, x.client) for x in state.extras if x.live]
        return own

    def loads(self) -> tuple[list[tuple[ExtraLink | None, H2Connection]], list[LinkLoad]]:
        links = self.links()
        return links, [
            load_of(conn, extra, self._opening.get(id(conn), 0)) for extra, conn in links
        ]

    def note_load(self, loads: Sequence[LinkLoad]) -> None:
        """Ask for another link when the pool is full enough (the pool's dialer acts)."""
        state = self.state
        if state.want_link.is_set():
            return  # asked already
        # Count every link this side dialed (draining ones too): they all hold a connection.
        closing = sum(1 for x in state.extras if x.dialed and not x.live)
        if want_more(loads, opening=state.opening, policy=self.policy, closing=closing):
            state.want_link.set()

    async def open_stream(self, headers: HeaderInput, *, end_stream: bool = False) -> H2Stream:
        """Open a stream on the least loaded link with room; when every link is full, wait
        for a slot on the least loaded one or for the links to change (one came up or went),
        whichever is first, and look again.  The caller's deadline bounds the wait.

        Only one ``open_stream`` of a link is ever under way for one call: two racing on two
        links could both send their request, and a request sent whole (END_STREAM) would run
        twice at the peer.
        """
        while True:
            links, loads = self.loads()
            if not links:
                raise ConnectionGone("no link to the peer is up")
            chosen = pick(loads)
            if chosen is None:
                self.note_load(loads)
            else:
                # Ask for a link when this stream fills the pool up.  The chosen link is the
                # least loaded one: while it stays under the high-water mark with this
                # stream, no usable link is over it, and nothing needs looking at.
                load = loads[chosen]
                if load.open_streams + 1 >= self.policy.high_water * load.max_streams:
                    taken = LinkLoad(load.open_streams + 1, load.max_streams, extra=load.extra)
                    self.note_load([*loads[:chosen], taken, *loads[chosen + 1 :]])
                extra, conn = links[chosen]
                if extra is not None:
                    extra.idle_since = None
                return await self._open_on(conn, headers, end_stream)
            index = least_loaded(loads)
            if index is None:  # every link is draining: a new one is on its way
                await self.state.changed.wait()
                continue
            opened: list[H2Stream] = []
            async with trio.open_nursery() as nursery:
                nursery.start_soon(
                    _open_into, links[index][1], headers, end_stream, opened, nursery
                )
                nursery.start_soon(_cancel_on, self.state.changed, nursery)
            if opened:
                self.note_load(self.loads()[1])  # the slot it took may have been the last
                return opened[0]

    async def _open_on(
        self, conn: H2Connection, headers: HeaderInput, end_stream: bool
    ) -> H2Stream:
        # Opens under way count as load: a burst of opens in one scheduler pass must spread
        # over the links, not all take the slot that was free when each one looked.
        key = id(conn)
        self._opening[key] = self._opening.get(key, 0) + 1
        try:
            return await conn.open_stream(headers, end_stream=end_stream)
        finally:
            left = self._opening[key] - 1
            if left:
                self._opening[key] = left
            else:
                del self._opening[key]

    async def peer_accepts_extended_connect(self) -> bool:
        links = self.links()
        if not links:
            raise ConnectionGone("no link to the peer is up")
        return await links[0][1].peer_accepts_extended_connect()


async def _open_into(
    conn: H2Connection,
    headers: HeaderInput,
    end_stream: bool,
    opened: list[H2Stream],
    nursery: trio.Nursery,
) -> None:
    """Open a stream on ``conn`` (waiting for a slot there) unless ``nursery`` is cancelled
    first; a cancelled wait sends nothing."""
    try:
        opened.append(await conn.open_stream(headers, end_stream=end_stream))
    except ConnectionGone:
        return  # the link is going: the links' ``changed`` event follows
    nursery.cancel_scope.cancel()


async def _cancel_on(event: trio.Event, nursery: trio.Nursery) -> None:
    await event.wait()
    nursery.cancel_scope.cancel()


async def run_pool(
    pool: PeerPool,
    *,
    dial: Callable[[], Awaitable[Link]],
    run_extra: Callable[[Link], Awaitable[bool]],
    delay: Callable[[int], float],
    clock: Callable[[], float] = trio.current_time,
) -> None:
    """Dial extra links when the pool asks for one, close idle ones; until cancelled.

    ``dial()`` returns a verified link (raising ``IsthmusError``), ``run_extra(link)`` runs it
    as an extra link until it closes and says whether it was ever established, and
    ``delay(attempt)`` is the backoff.  A failed dial and an extra link that closed before it
    was established (the peer refused it) both count as a failure: the next dial waits
    ``delay(failures - 1)``; an established extra link starts the count again.
    """
    state = pool.state
    failures = 0

    async def run_one(link: Link) -> None:
        nonlocal failures
        established = await run_extra(link)
        failures = 0 if established else failures + 1
        if not established:
            state.want_link.set()  # try again, after the backoff, if still wanted

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_close_idle, pool, clock)
        while True:
            await state.want_link.wait()
            if failures:
                await trio.sleep(delay(failures - 1))
            state.want_link = trio.Event()
            _links, loads = pool.loads()
            pool.note_load(loads)  # still wanted? (sets the new event if so)
            if not state.want_link.is_set() or state.outbound() is None:
                continue
            state.want_link = trio.Event()
            state.opening += 1
            try:
                link = await dial()
            except IsthmusError as exc:
                state.opening -= 1
                failures += 1
                log.info("cannot open an extra link to %s: %s", state.spec.name, exc)
                state.want_link.set()  # try again, after the backoff, if still wanted
                continue
            nursery.start_soon(run_one, link)  # it counts ``opening`` down once set up


async def _close_idle(pool: PeerPool, clock: Callable[[], float]) -> None:
    """Every half idle period: mark extra links seen idle, drain one idle long enough."""
    state = pool.state
    period = max(0.05, pool.policy.idle_close_s / 2)
    async with trio.open_nursery() as nursery:
        while True:
            await trio.sleep(period)
            now = clock()
            links, loads = pool.loads()
            for (extra, _conn), load in zip(links, loads, strict=True):
                if extra is not None:
                    if not load.idle:
                        extra.idle_since = None
                    elif extra.idle_since is None:
                        extra.idle_since = now
            _links, loads = pool.loads()
            chosen = to_close(loads, now=now, policy=pool.policy)
            if chosen is None:
                continue
            extra = links[chosen][0]
            assert extra is not None
            extra.draining = True
            state.notify()
            nursery.start_soon(_drain, extra)


async def _drain(extra: ExtraLink) -> None:
    """No new streams on ``extra``; close it once those under way are done.

    The pool no longer picks it (``draining``); the peer's streams on its reverse connection
    are refused from now on and waited for (``drain``).  Our own side's connection also
    carries the reverse connection's stream, which never ends by itself, so its streams are
    looked at every :data:`DRAIN_POLL_S` (it was idle when chosen: this is a guard for a
    stream opened in the same instant, rarely more than one look).
    """
    session = extra.session
    with trio.move_on_after(DRAIN_GRACE_S):
        if session.reverse is not None:
            await session.reverse.drain()
        while extra.client.statistics().open_streams > (1 if extra.dialed else 0):  # noqa: ASYNC110 -- no event for a stream ending
            await trio.sleep(DRAIN_POLL_S)
    await session.aclose()
