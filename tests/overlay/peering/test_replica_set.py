"""The replica set: a replica already closing when the stream is opened is skipped."""

from __future__ import annotations

from typing import Any, cast

import pytest

from overlay.h2.stream import ConnectionGone, H2Stream, HeaderInput
from overlay.peering.replica_set import ReplicaSet


class Opener:
    def __init__(self, name: str, *, gone: bool = False) -> None:
        self.name, self.gone, self.opened = name, gone, 0

    async def open_stream(self, headers: HeaderInput, *, end_stream: bool = False) -> H2Stream:
        if self.gone:
            raise ConnectionGone(f"{self.name} is closing")
        self.opened += 1
        return cast(H2Stream, self.name)

    async def peer_accepts_extended_connect(self) -> bool:
        return True


async def test_streams_spread_and_a_closing_replica_is_skipped() -> None:
    a, b = Opener("a"), Opener("b")
    both = ReplicaSet([a, b])
    for _ in range(10):
        await both.open_stream([])
    assert (a.opened, b.opened) == (5, 5)  # equal loads: the turns alternate
    gone = Opener("gone", gone=True)
    for _ in range(4):
        assert cast(Any, await ReplicaSet([gone, b]).open_stream([])) == "b"
    with pytest.raises(ConnectionGone):
        await ReplicaSet([gone, Opener("x", gone=True)]).open_stream([])


async def test_a_suspect_replica_takes_streams_only_when_nothing_else_can() -> None:
    a, b = Opener("a"), Opener("b")
    for _ in range(6):
        await ReplicaSet([a, b], [True, False]).open_stream([])
    assert (a.opened, b.opened) == (0, 6)
    b.gone = True
    assert cast(Any, await ReplicaSet([a, b], [True, False]).open_stream([])) == "a"
    with pytest.raises(ValueError, match="live replica"):
        ReplicaSet([])
