"""Resumable pure computations: a generator that pauses between bounded slices of work.

Why: the catalog core is pure and synchronous, but at 100k endpoints one step of it (a full
resync, a big diff) is hundreds of milliseconds of CPU.  Run in one go on the gateway's event
loop, every request in flight would wait that long.  So the heavy cores are written as
generators that ``yield`` the number of items they processed after at most ``slice_items`` of
them, and return their result (``StopIteration.value``).  They stay pure -- no clock, no trio:
:func:`complete` runs one to the end synchronously (tests, tools, small catalogs), and the
trio adapter (:func:`discovery.pacing.paced`) runs it slice by slice with a checkpoint in
between, so the loop serves ready tasks at least every slice.

Between two slices nothing the generator holds is visible to anyone: it works on a private
mutation of persistent maps and publishes one immutable snapshot at the end, so readers see
the old snapshot or the new one, never a half-applied one.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

R = TypeVar("R")

Steps = Generator[int, None, R]
"""A resumable computation: yields items processed per slice, returns its result."""

SLICE_ITEMS = 1000
"""Default bound of items per slice: ~1-10 ms of catalog work on a slow core (one item is one
endpoint compared, checked, stored or re-merged), well under the 50 ms stall budget."""

UNSLICED = 1 << 62
"""A slice bound never reached: run in one go (the synchronous entry points use it)."""


def complete(steps: Steps[R]) -> R:
    """Run ``steps`` to the end without pausing; return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as stop:
            result: R = stop.value
            return result


def check_slice(slice_items: int) -> int:
    if slice_items < 1:
        raise ValueError("slice_items must be at least 1")
    return slice_items
