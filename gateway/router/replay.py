"""A request body that can be sent again: kept while it is read, up to a bound (Trio-free).

Why: bodies are streamed, never buffered whole, so once an attempt consumed part of one it
cannot be sent to a second endpoint -- unless what was read is still at hand.  Envoy keeps a
request body for retries up to a buffer limit; so does this: :class:`ReplayBody` records each
piece the first attempt takes, and a later attempt's :meth:`ReplayBody.reader` replays the
record before it reads on from the caller.  Past ``limit`` bytes the record is dropped and
the body is no longer replayable (a retry is then not made).  Only one reader reads at a
time: attempts run one after another.
"""

from __future__ import annotations

from gateway.http.exchange import Body
from gateway.http.held_body import held_whole
from gateway.http.message import Headers


class ReplayBody:
    """The caller's body, with the pieces read so far kept for a replay (see the module doc)."""

    __slots__ = ("_inner", "_kept", "_size", "consumed", "limit", "replayable")

    def __init__(self, inner: Body, limit: int) -> None:
        self._inner = inner
        self._kept: list[bytes] = []
        self._size = 0
        self.limit = limit
        #: Any byte was handed to an attempt.
        self.consumed = False
        #: Every byte handed out is still kept (a new reader would see the same body).
        self.replayable = True

    def forget(self) -> None:
        """No attempt will follow (a response head went out): drop what was kept."""
        self.replayable = False
        self._kept = []

    def reader(self) -> _Reader:
        """A body for one attempt: the kept pieces first, then the rest from the caller."""
        return _Reader(self)

    async def _read_more(self, max_bytes: int | None) -> bytes:
        data = await self._inner.receive_some(max_bytes)
        if data:
            self.consumed = True
            if self.replayable:
                self._size += len(data)
                if self._size > self.limit:
                    self.replayable = False
                    self._kept = []
                else:
                    self._kept.append(data)
        return data

    @property
    def trailers(self) -> Headers:
        return self._inner.trailers


class _Reader:
    """One attempt's view of a :class:`ReplayBody`."""

    __slots__ = ("_index", "_offset", "_owner")

    def __init__(self, owner: ReplayBody) -> None:
        self._owner = owner
        self._index = 0
        self._offset = 0

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        owner = self._owner
        kept = owner._kept
        if owner.replayable and self._index < len(kept):
            piece = kept[self._index]
            end = len(piece) if max_bytes is None else min(len(piece), self._offset + max_bytes)
            data = piece[self._offset : end]
            if end == len(piece):
                self._index += 1
                self._offset = 0
            else:
                self._offset = end
            return data
        data = await owner._read_more(max_bytes)
        if data and owner.replayable:
            self._index = len(owner._kept)  # what we just read is kept: past it
        return data

    @property
    def trailers(self) -> Headers:
        return self._owner.trailers

    def held_whole(self, limit: int) -> bytes | None:
        """The caller's body held whole (nothing read from it: each attempt can take it)."""
        owner = self._owner
        if owner.consumed or self._index or self._offset:
            return None
        return held_whole(owner._inner, limit)
