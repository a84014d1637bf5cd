"""Admin answers built and encoded in bounded slices, so a large one never stalls the data path.

Why: the admin server runs on the gateway's event loop, next to every request in flight.  On
a 100k-endpoint catalog ``GET /catalog`` builds 100k dicts and encodes ~60 MB of indented
JSON, ``/imports`` and ``/routes`` 10k entries each from a large peer, ``/metrics`` counts
every endpoint: done in one call, each is one task step of tens of milliseconds to seconds,
and every request in flight waits that long (``scripts/bench_stall.py``, phase ``admin``).
Here both halves are resumable pure computations (:mod:`discovery.steps`), driven by
:func:`discovery.pacing.paced`: at most one slice per task step, a checkpoint (and a rest that
caps the answer's share of the loop) between slices.

* A view that may be large returns :class:`Sliced` with a generator that builds its body from
  *immutable snapshots taken when the request came* (the catalog, the import table, the
  route view are frozen values swapped whole), so what it reads cannot change between slices.
* :func:`encode_json` turns any JSON body into the same bytes as ``json.dumps(body,
  indent=2, sort_keys=True, default=str) + "\\n"``, in chunks, yielding after every
  :data:`ENCODE_SLICE` pieces of the standard library's incremental encoder (the pure-Python
  one, which ``json.dumps`` uses anyway as soon as ``indent`` is set).
* A top-level value may be :class:`Rows`, an iterator of JSON values encoded as an array row
  by row as they are produced: a 100k-endpoint ``/catalog`` never holds its 100k row dicts at
  once (~300 MB, and enough new objects to trigger full GC passes of hundreds of ms).

A small answer finishes within its first slice: no checkpoint, no cost over a plain call.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from discovery.steps import Steps

__all__ = ["ENCODE_SLICE", "ROWS_SLICE", "Rows", "Sliced", "encode_json", "is_large"]

ENCODE_SLICE = 8192
"""Pieces of encoded JSON per slice (a piece is a key, a value or a separator: ~1-3 ms)."""

ROWS_SLICE = 1000
"""Rows (endpoints, services, routes) a view's builder renders per slice (~2-5 ms)."""

ROW_PIECES = ENCODE_SLICE // 256
"""What one :class:`Rows` row counts for against :data:`ENCODE_SLICE` (a catalog row is
about that many pieces): 256 rows per slice."""


@dataclass(frozen=True, slots=True)
class Sliced:
    """A view's answer built in slices: ``steps`` returns the body (JSON value or ``Text``).

    The generator must read only values that nobody mutates (snapshots taken by the view).
    ``exclusive``: rendered one at a time with the other exclusive answers (those that grow
    with the catalog); False for a bounded one that must not wait behind them (``/overlay``,
    which the map page polls).
    """

    steps: Steps[Any]
    exclusive: bool = True


@dataclass(frozen=True, slots=True)
class Rows:
    """A JSON array produced lazily, for a top-level value of a :class:`dict` body; ``rows``
    must read only immutable snapshots (it runs between slices) and is consumed once."""

    rows: Iterable[Any]


def is_large(body: Any) -> bool:
    """An exclusive :class:`Sliced` answer or a body with :class:`Rows`: rendered one at a
    time."""
    return (isinstance(body, Sliced) and body.exclusive) or _has_rows(body)


def _has_rows(body: Any) -> bool:
    return isinstance(body, dict) and any(isinstance(v, Rows) for v in body.values())


def _encoder() -> json.JSONEncoder:
    return json.JSONEncoder(indent=2, sort_keys=True, default=str)


def _nested(encoder: json.JSONEncoder, value: Any, margin: str) -> str:
    # JSON text holds no raw newline (strings escape it): re-indenting is exact.
    return encoder.encode(value).replace("\n", "\n" + margin)


def _pieces(body: Any) -> Iterator[tuple[str, int]]:
    """``body``'s JSON text as (piece, cost) pairs, in the layout of ``json.dumps``."""
    encoder = _encoder()
    if not _has_rows(body):
        for piece in encoder.iterencode(body):
            yield piece, 1
        return
    for i, key in enumerate(sorted(body)):
        yield ("{\n  " if i == 0 else ",\n  ") + json.dumps(key) + ": ", 1
        value = body[key]
        if not isinstance(value, Rows):
            yield _nested(encoder, value, "  "), 1
            continue
        empty = True
        for row in value.rows:
            yield ("[\n    " if empty else ",\n    ") + _nested(encoder, row, "    "), ROW_PIECES
            empty = False
        yield ("[]" if empty else "\n  ]"), 1
    yield "\n}", 1


def encode_json(body: Any, *, slice_pieces: int = ENCODE_SLICE) -> Steps[list[bytes]]:
    """``body`` as indented, key-sorted JSON (the admin format) plus a newline, as chunks of
    bytes (one per slice: no copy of the whole answer at the end), a slice at a time."""
    chunks: list[bytes] = []
    parts: list[str] = []
    pending = 0
    for piece, cost in _pieces(body):
        parts.append(piece)
        pending += cost
        if pending >= slice_pieces:
            chunks.append("".join(parts).encode())
            parts.clear()
            yield pending
            pending = 0
    parts.append("\n")
    chunks.append("".join(parts).encode())
    return chunks
