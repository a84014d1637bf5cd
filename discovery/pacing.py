"""Run a sliced pure computation (:mod:`discovery.steps`) on the trio loop without stalling it.

The thin adapter of the slicing idea: after each slice the computation yields, and
:func:`paced` gives the scheduler a checkpoint, so requests in flight run between slices
instead of waiting behind the whole computation.  Why not a worker thread
(``trio.to_thread``): the work is pure Python, so a thread holds the GIL and the loop gets it
back only at the interpreter's switch interval (5 ms, then it must win the GIL back), which
bounds the stall no better and less predictably; slicing keeps the order of applies obvious
and needs no hand-over: the persistent maps are shared as they are.

Slicing bounds how long a request waits behind one slice, not how much of the core the
computation takes: a resync of 100k endpoints is seconds of CPU on a slow core, and with a
checkpoint alone it takes a turn in every scheduler batch for all that time, so requests
(which need several turns each) crawl.  ``duty`` caps its share: after a slice that took ``t``
seconds, it sleeps ``t * (1 - duty) / duty`` (at most ``MAX_REST_S``), leaving the loop idle
for the data path.  The default 0.5 gives the data path at least half of the time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import trio

from discovery.steps import Steps

R = TypeVar("R")

DUTY = 0.5
"""Share of wall time a paced computation may use while it runs."""

MAX_REST_S = 0.05
"""Longest rest after one slice (a slice held up by the OS must not idle the work for long)."""


async def paced(
    steps: Steps[R],
    *,
    duty: float = DUTY,
    clock: Callable[[], float] = time.perf_counter,
) -> R:
    """Drive ``steps`` to the end, resting between slices so it uses <= ``duty`` of the time.

    ``duty = 1``: only a checkpoint between slices.  Cancellation at a checkpoint or rest
    abandons the computation: nothing of it was published.
    """
    if not 0 < duty <= 1:
        raise ValueError("duty must be in (0, 1]")
    factor = (1 - duty) / duty
    while True:
        began = clock()
        try:
            next(steps)
        except StopIteration as stop:
            result: R = stop.value
            return result
        rest = min((clock() - began) * factor, MAX_REST_S)
        if rest > 0:
            await trio.sleep(rest)
        else:
            await trio.lowlevel.checkpoint()
