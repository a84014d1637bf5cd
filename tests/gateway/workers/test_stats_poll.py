"""A scrape's round of stats requests: answers recorded, a silent or dead worker bounded by
the round's deadline and shown by its counts only, a late answer still recorded."""

from __future__ import annotations

from dataclasses import dataclass

import trio
import trio.testing

from foundation.errors import IsthmusError
from gateway.observe.metrics import FamilySamples
from gateway.workers.stats import StatsBook, WorkerStats
from gateway.workers.stats_poll import Send, StatsPoll


@dataclass(frozen=True)
class Ask:
    request_id: int


def stats(index: int, pid: int, count: float) -> WorkerStats:
    return WorkerStats(
        index=index,
        pid=pid,
        families=(
            FamilySamples("isthmus_requests_total", "R.", "counter", (), (((), (count,)),)),
            FamilySamples("isthmus_link_up", "U.", "gauge", ("peer",), ((("b",), (1.0,)),)),
        ),
        links={"b": {"up": True}},
        in_flight={"link_streams": 2},
    )


class Worker:
    """A worker's end of its channel, in memory: it answers (or not) each request."""

    def __init__(self, poll: StatsPoll, index: int, *, answers: bool = True) -> None:
        self.poll, self.index, self.answers = poll, index, answers
        self.count = 0.0
        self.asked: list[int] = []

    async def send(self, message: object) -> None:
        assert isinstance(message, Ask)
        self.asked.append(message.request_id)
        self.count += 1
        if self.answers:
            await trio.sleep(0.01)  # the channel's hop
            self.poll.answer(
                self.index, message.request_id, stats(99, 1000 + self.index, self.count)
            )


async def test_a_round_records_every_answer(autojump_clock: trio.testing.MockClock) -> None:
    poll = StatsPoll(StatsBook(), Ask, timeout_s=2.0)
    workers = [Worker(poll, 0), Worker(poll, 1)]
    start = trio.current_time()
    got = await poll.poll({w.index: w.send for w in workers})
    assert trio.current_time() - start < 2.0  # it did not wait for the deadline
    assert [(s.index, s.families[0].samples[0][1][0]) for s in got] == [(0, 1.0), (1, 1.0)]
    got = await poll.poll({w.index: w.send for w in workers})
    assert [s.families[0].samples[0][1][0] for s in got] == [2.0, 2.0]
    assert workers[0].asked == [1, 2]


async def test_a_silent_or_dead_worker_is_bounded_and_keeps_only_its_counts(
    autojump_clock: trio.testing.MockClock,
) -> None:
    poll = StatsPoll(StatsBook(), Ask, timeout_s=2.0)
    quiet = Worker(poll, 1)
    await poll.poll({0: Worker(poll, 0).send, 1: quiet.send})
    quiet.answers = False

    async def dead(message: object) -> None:
        raise IsthmusError("channel closed")

    start = trio.current_time()
    with trio.fail_after(10):  # hang guard: 5x the round's deadline
        got = await poll.poll({0: dead, 1: quiet.send})
    # (mock clock) the silent one was waited for, up to the round's end
    assert trio.current_time() - start >= 2.0 - 1e-9
    for s in got:  # both kept their counts, neither its gauges nor its links
        assert [f.name for f in s.families] == ["isthmus_requests_total"]
        assert s.links == {} and s.in_flight == {}
    # A late answer of an older round is still the newest figures.
    poll.answer(1, 1, stats(1, 1001, 5.0))
    assert poll.book.current()[1].families[0].samples[0][1][0] == 5.0
    assert poll.book.current()[1].links == {"b": {"up": True}}


async def test_anything_but_a_report_is_ignored(autojump_clock: trio.testing.MockClock) -> None:
    poll = StatsPoll(StatsBook(), Ask, timeout_s=1.0)

    async def odd(message: object) -> None:
        poll.answer(0, 1, {"not": "stats"})

    send: Send = odd
    assert await poll.poll({0: send}) == []
