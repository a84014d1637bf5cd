"""Least request with the power of two choices, as a pure function.

Why two choices: asking *every* endpoint for its load and taking the least loaded sends a
burst to whichever looked idle a moment ago; picking two at random and taking the less
loaded of the two is nearly as good at avoiding busy endpoints and never herds (Mitzenmacher,
"The Power of Two Choices in Randomized Load Balancing").

The load of an endpoint is its requests in flight *from this gateway* divided by its weight,
so weights still count.  The random draws are arguments (``r1``, ``r2``), which keeps the
function deterministic under test; the caller draws them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

from gateway.cluster.wrr import effective_weights

T = TypeVar("T")


def p2c(
    candidates: Sequence[T],
    in_flight: Sequence[int],
    weights: Sequence[int],
    r1: int,
    r2: int,
) -> tuple[T, ...]:
    """The candidates in the order to try them: the less loaded of draws ``r1 mod n`` and
    ``r2 mod (n - 1)`` (the second skips the first, so the two differ) first, then the rest
    in list order after it.  Ties go to the first draw."""
    n = len(candidates)
    if n == 0:
        return ()
    first = r1 % n
    best = first
    if n > 1:
        second = r2 % (n - 1)
        if second >= first:
            second += 1
        eff = effective_weights(weights)
        # Compare in_flight / weight without division: a weight of 0 loads like infinity.
        a, b = in_flight[first], in_flight[second]
        wa, wb = eff[first], eff[second]
        if (wa == 0 and wb > 0) or (wa > 0 and wb > 0 and b * wa < a * wb):
            best = second
    return (*candidates[best:], *candidates[:best])
