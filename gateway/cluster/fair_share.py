"""Each caller's fair share of a peer's link stream slots.

Why: a link carries a whole site's cross-site traffic.  Without a per-caller bound, one caller
(a hundred idle ``CONNECT`` tunnels, a hundred slow request bodies) could hold every stream
slot of the link, and every other caller's request would wait for a slot until its route
timeout.  So each caller may hold at most ``limit`` streams towards one peer site, across all
of that peer's links; over it, its new stream waits at most ``wait_s`` for one of its *own*
streams to end, then fails with a 503 that names the limit.  It never makes others wait: the
slots it does not hold stay free for them.  Buffer memory follows: every stream buffers at most
the link's stream window, so a caller buffers at most ``limit`` stream windows per peer.

Who is a caller: its SPIFFE ID when it authenticated with one (however many connections it
opens), else the address it connects from (``CallContext.caller_address``, set by the
listener for each accepted connection), so opening more connections does not buy more slots.
A request with neither (one handed over by a peer without a caller ID) is not counted here.

Theory of operation: ``CallerShares`` is a map caller -> streams held, for one peer site.
``hold`` takes a slot (waiting on a parking lot that every release wakes) and returns a
``release`` callable; it is called exactly once, when the stream ends
(:class:`~gateway.cluster.held_stream.HeldStream` calls it when its tunnel is closed).
The decision itself -- may this caller take another slot -- is the pure :func:`may_take`.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from gateway.cluster.errors import SiteDidNoWork
from gateway.http.exchange import CallContext


class CallerOverShare(SiteDidNoWork):
    """The caller already holds its share of the stream slots towards this peer site: 503,
    and no other site is tried on its behalf (its share there is none of this one's)."""

    http_status = 503
    retry_elsewhere = False


def caller_key(ctx: CallContext) -> str | None:
    """Who the caller is, for its share: its SPIFFE ID, else its address, else None."""
    if ctx.caller_id is not None:
        return f"spiffe:{ctx.caller_id}"
    if ctx.caller_address is not None:
        return f"address:{ctx.caller_address}"
    return None


def may_take(held: int, limit: int) -> bool:
    """Whether a caller holding ``held`` slots may take one more."""
    return held < limit


class CallerShares:
    """Streams each caller holds towards one peer site; see the module docstring."""

    def __init__(self, site: str, *, limit: int, wait_s: float) -> None:
        if limit < 1 or wait_s < 0:
            raise ValueError("limit must be positive and wait_s not negative")
        self.site = site
        self.limit = limit
        self.wait_s = wait_s
        self._held: dict[str, int] = {}
        self._lot = trio.lowlevel.ParkingLot()
        self.refused = 0

    def held(self, caller: str) -> int:
        return self._held.get(caller, 0)

    async def hold(self, caller: str | None) -> Callable[[], None]:
        """Take one of ``caller``'s slots; returns its release (call it once the stream is
        over).  Raises ``CallerOverShare`` after ``wait_s`` without a slot of its own."""
        await trio.lowlevel.checkpoint()
        if caller is None:
            return _nothing
        if not may_take(self.held(caller), self.limit):  # (the common case skips the timer)
            with trio.move_on_after(self.wait_s):
                while not may_take(self.held(caller), self.limit):
                    await self._lot.park()
        if not may_take(self.held(caller), self.limit):
            self.refused += 1
            raise CallerOverShare(
                f"this caller already holds {self.limit} streams to site {self.site!r} "
                f"([limits] link_caller_max_streams = {self.limit}); retry when one ends"
            )
        self._held[caller] = self.held(caller) + 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            left = self._held[caller] - 1
            if left:
                self._held[caller] = left
            else:
                del self._held[caller]
            self._lot.unpark_all()

        return release


def _nothing() -> None:
    return None


class SiteShares:
    """One ``CallerShares`` per peer site, made on first use (sites come and go with
    peering; a site's map is empty, and costs a few bytes, once its callers are done)."""

    def __init__(self, *, limit: int, wait_s: float) -> None:
        self.limit = limit
        self.wait_s = wait_s
        self._sites: dict[str, CallerShares] = {}

    def for_site(self, site: str) -> CallerShares:
        shares = self._sites.get(site)
        if shares is None:
            shares = self._sites[site] = CallerShares(site, limit=self.limit, wait_s=self.wait_s)
        return shares


