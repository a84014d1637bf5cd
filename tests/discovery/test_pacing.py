"""paced(): a checkpoint between slices, and a rest that caps the computation's share of time."""

from __future__ import annotations

import pytest
import trio

from discovery.pacing import MAX_REST_S, paced
from discovery.steps import Steps


def three_slices() -> Steps[str]:
    for _ in range(3):
        yield 1
    return "done"


class Ticks:
    """A fake CPU clock: every slice 'takes' ``per_slice`` seconds."""

    def __init__(self, per_slice: float) -> None:
        self.now = 0.0
        self.per_slice = per_slice
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        if self.reads % 2 == 0:  # the read after a slice
            self.now += self.per_slice
        return self.now


async def test_rests_as_long_as_the_slice_took_at_half_duty(autojump_clock: trio.abc.Clock) -> None:
    start = trio.current_time()
    assert await paced(three_slices(), duty=0.5, clock=Ticks(0.01)) == "done"
    assert trio.current_time() - start == pytest.approx(3 * 0.01)


async def test_rest_is_capped_and_full_duty_only_checkpoints(
    autojump_clock: trio.abc.Clock,
) -> None:
    start = trio.current_time()
    assert await paced(three_slices(), duty=0.5, clock=Ticks(10.0)) == "done"
    assert trio.current_time() - start == pytest.approx(3 * MAX_REST_S)
    start = trio.current_time()
    assert await paced(three_slices(), duty=1.0, clock=Ticks(10.0)) == "done"
    assert trio.current_time() == start
    with pytest.raises(ValueError):
        await paced(three_slices(), duty=0.0)
