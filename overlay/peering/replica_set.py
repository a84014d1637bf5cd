"""What a peer cluster opens its streams on when the site has several live replicas.

:meth:`overlay.peering.peers.Peering.outbound` hands the router one
:class:`~overlay.peering.pool.StreamOpener` per site.  With one live replica that is the
replica's own connection (or link pool), exactly as without replicas; with more it is a
:class:`ReplicaSet` over the live ones, which spreads new streams with the pure
:func:`~overlay.peering.replicas.pick_replica` (least loaded, ties rotating).

A replica whose connection is already closing when the stream is to be opened
(``ConnectionGone`` from ``open_stream``: nothing was sent) is skipped for the next live one,
so a request never fails for a replica that died an instant before; one that dies after the
request went out fails as with one gateway, and the router's retry (or failover, for an
idempotent request) takes it -- by then the dead replica is out of the set.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from overlay.h2.connection import H2Connection
from overlay.h2.stream import ConnectionGone, H2Stream, HeaderInput
from overlay.peering.pool import PeerPool, StreamOpener
from overlay.peering.replicas import ReplicaLoad, pick_replica

#: One counter per process: ties between equally loaded replicas rotate across requests.
_TURNS = itertools.count()


def replica_load(opener: StreamOpener, suspect: bool = False) -> ReplicaLoad:
    """The streams open on what ``opener`` sends on, over the peer's limit on them."""
    if isinstance(opener, H2Connection):
        in_use, limit = opener.stream_room
        return ReplicaLoad(in_use, limit, suspect)
    if isinstance(opener, PeerPool):
        _links, loads = opener.loads()
        in_use = sum(x.open_streams for x in loads)
        return ReplicaLoad(in_use, sum(x.max_streams for x in loads) or 1, suspect)
    return ReplicaLoad(0, 1, suspect)


class ReplicaSet:
    """The live replicas of one site as one :class:`~overlay.peering.pool.StreamOpener`."""

    __slots__ = ("openers", "suspect")

    def __init__(
        self, openers: Sequence[StreamOpener], suspect: Sequence[bool] | None = None
    ) -> None:
        """``suspect[i]``: replica ``i`` lost a link moments ago (it is tried last)."""
        if not openers:
            raise ValueError("a replica set needs a live replica")
        self.openers = tuple(openers)
        self.suspect = tuple(suspect) if suspect is not None else (False,) * len(openers)

    async def open_stream(self, headers: HeaderInput, *, end_stream: bool = False) -> H2Stream:
        left = list(zip(self.openers, self.suspect, strict=True))
        gone: ConnectionGone | None = None
        while left:
            i = pick_replica([replica_load(o, s) for o, s in left], next(_TURNS))
            assert i is not None
            opener, _suspect = left.pop(i)
            try:
                return await opener.open_stream(headers, end_stream=end_stream)
            except ConnectionGone as exc:  # nothing was sent: the next replica takes it
                gone = exc
        assert gone is not None
        raise gone

    async def peer_accepts_extended_connect(self) -> bool:
        # Every replica runs the same gateway: the first live one answers for the site.
        return await self.openers[0].peer_accepts_extended_connect()
