"""The link pool's decisions: which of a peer's links takes a new stream, when to open another
link, when an extra link may go.

Why: one link has a fixed number of stream slots -- the peer's advertised
SETTINGS_MAX_CONCURRENT_STREAMS -- and a whole site's cross-site traffic shares them.  When
they run out, a new request waits for a slot however idle the network is.  So the dialing side
of a peer may hold up to ``max_links`` links to it, opened as the existing ones fill up and
closed again once an extra one has been idle for a while.

Pure (no trio, no sockets; ``now`` is an argument), so the rules below are property-tested
directly (tests/overlay/peering/test_link_pool.py):

* :func:`pick` -- the least loaded usable link that has room; never a full link while another
  has room; ``None`` when every link is full (the caller waits for a slot or a new link).
* :func:`want_more` -- open one more link when every usable link is at or over ``high_water``
  of its slots, nothing is being opened yet and the links (open, draining or being opened)
  stay within ``max_links``.
* :func:`to_close` -- an *extra* link (never the primary, which carries federation) idle for
  ``idle_close_s``, only while another usable link remains and the others are not so full that
  :func:`want_more` would open a link again at once.  It is drained: no new streams, closed
  when its streams have finished.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

HIGH_WATER = 0.8  # open another link once every link has this fraction of its slots in use
IDLE_CLOSE_S = 60.0  # an extra link with no stream for this long is drained and closed


@dataclass(frozen=True, slots=True)
class LinkLoad:
    """One link as the pool sees it at one moment."""

    open_streams: int
    max_streams: int  # the peer's advertised MAX_CONCURRENT_STREAMS on this link
    extra: bool = False  # opened by the pool (may be closed when idle); False: the primary
    draining: bool = False  # takes no new stream; closes when its streams are done
    idle_since: float | None = None  # when it was last seen without a stream (None: busy)
    #: Streams the link holds for itself, not for traffic (a dialer's reverse connection
    #: rides on one): counted against the slots, but a link with only these is idle.
    fixed_streams: int = 0

    @property
    def room(self) -> int:
        return max(0, self.max_streams - self.open_streams)

    @property
    def usable(self) -> bool:
        return not self.draining

    @property
    def idle(self) -> bool:
        return self.open_streams <= self.fixed_streams

    def over(self, high_water: float) -> bool:
        return self.open_streams >= high_water * self.max_streams


@dataclass(frozen=True, slots=True)
class PoolPolicy:
    """How many links a peer may have and when they come and go."""

    max_links: int = 4
    high_water: float = HIGH_WATER
    idle_close_s: float = IDLE_CLOSE_S

    def __post_init__(self) -> None:
        if self.max_links < 1:
            raise ValueError("max_links must be at least 1")
        if not 0.0 < self.high_water <= 1.0:
            raise ValueError("high_water must be in (0, 1]")
        if self.idle_close_s < 0:
            raise ValueError("idle_close_s must not be negative")


def pick(links: Sequence[LinkLoad]) -> int | None:
    """The index of the link a new stream goes on: the usable one with the smallest share of
    its slots in use (the first such on a tie, so the primary is preferred), among those with
    room; ``None`` when no usable link has room."""
    best: int | None = None
    best_key = (2.0, 0)
    for i, link in enumerate(links):
        if not link.usable or link.room == 0:
            continue
        key = (link.open_streams / link.max_streams, link.open_streams)
        if best is None or key < best_key:
            best, best_key = i, key
    return best


def least_loaded(links: Sequence[LinkLoad]) -> int | None:
    """The usable link whose slot frees up first, probably: the one with the fewest open
    streams over its limit (the one to wait on when every link is full); ``None`` if none."""
    usable = [i for i, link in enumerate(links) if link.usable]
    if not usable:
        return None
    return min(usable, key=lambda i: links[i].open_streams - links[i].max_streams)


def want_more(
    links: Sequence[LinkLoad], *, opening: int, policy: PoolPolicy, closing: int = 0
) -> bool:
    """Whether to open one more link now (see the module docstring).  ``closing``: links not
    in ``links`` that still hold a connection (drained, not yet closed): they count against
    ``max_links`` too."""
    if opening > 0 or len(links) + opening + closing >= policy.max_links:
        return False
    usable = [link for link in links if link.usable]
    return bool(usable) and all(link.over(policy.high_water) for link in usable)


def to_close(links: Sequence[LinkLoad], *, now: float, policy: PoolPolicy) -> int | None:
    """The index of an extra link to drain and close now, else ``None`` (the one idle longest)."""
    usable = [i for i, link in enumerate(links) if link.usable]
    if len(usable) < 2:
        return None  # never the last usable link
    best: int | None = None
    for i in usable:
        link = links[i]
        if not link.extra or not link.idle or link.idle_since is None:
            continue
        if now - link.idle_since < policy.idle_close_s:
            continue
        if best is None or link.idle_since < (links[best].idle_since or 0.0):
            best = i
    if best is None:
        return None
    rest = [links[i] for i in usable if i != best]
    if all(link.over(policy.high_water) for link in rest):
        return None  # the others are busy: closing it would only open another at once
    return best
