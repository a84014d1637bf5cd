"""Round robin, as a pure function of the candidates and a cursor.

Why pure: the pick is a decision, not I/O.  Keeping it a function of ``(candidates, cursor)``
makes fairness a property we can test exhaustively (hypothesis) without sockets, and leaves the
state -- one integer per service -- with the cluster that owns it.

Theory of operation
-------------------
The cluster keeps one cursor per service.  :func:`round_robin` returns every candidate in the
order to *try* them -- a rotation that starts at ``cursor mod n`` -- and the next cursor
(``cursor + 1``).  The first element is the pick; the rest are the fallbacks when connecting to
the pick fails, so a failed endpoint costs one attempt, never the request.  While the
candidate list is stable, ``k * n`` consecutive picks choose every candidate exactly ``k``
times.  When the list changes (an endpoint joins or leaves), the cursor simply continues: the
spread is fair again from the next full cycle on, and no per-endpoint state has to be migrated.

Weights are ignored for now (plain round robin, as the data-plane issue asks); the catalog
orders endpoints deterministically (by key), which is what makes a cursor meaningful.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")

#: Cursors wrap here so they stay small ints forever (any multiple of every n would do; the
#: rotation only needs ``cursor mod n``, and the wrap costs at most one uneven step).
CURSOR_WRAP = 1 << 62


def round_robin(candidates: Sequence[T], cursor: int) -> tuple[tuple[T, ...], int]:
    """The candidates in the order to try them (the pick first) and the next cursor.

    An empty ``candidates`` gives ``((), cursor)``: nothing was picked, the cursor stays.
    """
    n = len(candidates)
    if n == 0:
        return (), cursor
    start = cursor % n
    order = tuple(candidates[start:]) + tuple(candidates[:start])
    return order, (cursor + 1) % CURSOR_WRAP
