"""Smooth weighted round robin (the default balancer), as a pure step function.

Why smooth WRR: endpoint weights say how much of a service's traffic each instance should
take (a 9:1 weighting means nine requests of ten go to the first).  The smooth variant (the
one nginx uses) also *interleaves* the picks -- weights 5:1:1 give ``a a b a c a a``, not
``a a a a a b c`` -- so a heavy endpoint never receives a burst.

Theory of operation
-------------------
Every candidate has a *current* weight, starting at 0.  A pick adds each candidate's
effective weight to its current weight, takes the candidate with the largest current weight
(the first one on a tie, so the result is deterministic) and subtracts the total weight from
the winner's.  Over any ``W = sum(weights)`` consecutive picks on a stable candidate list,
each candidate is picked exactly ``weight`` times, and the current weights return to where
they were -- they stay within ``[-W, W]``, so the state never grows.

The state is one tuple of ints per service, aligned with the candidate tuple it was computed
for.  When the candidates change (an endpoint joins, leaves, or is ejected), the previous
current weights are carried over by key; a newcomer starts at 0.  The sum of the carried
values is re-centred on 0 so the invariant holds again at once.

Weights: an endpoint's ``weight`` (at least 1 here; ``0`` drains it: it gets no new picks
while any candidate has a positive weight, and stays a connect fallback).  When every
candidate weighs 0, they are balanced equally.

The returned order is the pick first, then the others in list order after the pick: the
fallbacks when connecting to the pick fails (nothing reached the endpoint, so trying
another cannot duplicate work).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)

#: Weights above this are clamped: keeps the arithmetic in small ints whatever a source says.
MAX_WEIGHT = 1 << 20


class WrrState(NamedTuple, Generic[K]):
    """The current weights of one service's candidates, aligned with ``keys`` (a named
    tuple: one is built per request, and a tuple is the cheapest immutable record)."""

    keys: tuple[K, ...] = ()
    current: tuple[int, ...] = ()


def effective_weights(weights: Sequence[int]) -> tuple[int, ...]:
    """Clamp to ``[0, MAX_WEIGHT]``; all zero (or negative) means equal shares."""
    if weights and min(weights) > 0 and max(weights) <= MAX_WEIGHT:  # the usual case
        return tuple(weights)
    out = tuple(w if 0 < w <= MAX_WEIGHT else (MAX_WEIGHT if w > 0 else 0) for w in weights)
    if not any(out):
        return (1,) * len(out)
    return out


def _carry(state: WrrState[K], keys: tuple[K, ...]) -> list[int]:
    """The previous current weights for ``keys`` (0 for newcomers), re-centred on sum 0."""
    if state.keys == keys:
        return list(state.current)
    before = dict(zip(state.keys, state.current, strict=True))
    current = [before.get(k, 0) for k in keys]
    n = len(current)
    if n:
        excess = sum(current)
        share, rest = divmod(excess, n)
        for i in range(n):
            current[i] -= share + (1 if i < rest else 0)
    return current


def smooth_wrr(
    candidates: Sequence[T],
    keys: Sequence[K],
    weights: Sequence[int],
    state: WrrState[K],
) -> tuple[tuple[T, ...], WrrState[K]]:
    """The candidates in the order to try them (the pick first) and the next state.

    ``keys`` and ``weights`` are aligned with ``candidates``.  An empty ``candidates`` gives
    ``((), state)``: nothing was picked, the state stays.
    """
    n = len(candidates)
    if n == 0:
        return (), state
    key_tuple = tuple(keys)
    if n == 1:  # the pick is the one candidate, and its current weight stays 0
        return tuple(candidates), state if state.keys == key_tuple else WrrState(key_tuple, (0,))
    eff = effective_weights(weights)
    current = _carry(state, key_tuple)
    best = -1
    best_value = 0
    for i, w in enumerate(eff):
        value = current[i] + w
        current[i] = value
        if w and (best < 0 or value > best_value):
            best, best_value = i, value
    current[best] -= sum(eff)
    order = (*candidates[best:], *candidates[:best])
    return order, WrrState(key_tuple, tuple(current))
