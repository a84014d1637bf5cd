"""What a pattern's matches must start with or contain: cheap refusals before the automaton.

Why apart from the engine: these are analyses of the parsed pattern that let a route table
skip a pattern without running it (a dictionary lookup on the path's start, an ``in`` at C
speed); the engine's own answer never depends on them, and the property tests check that
every match honours them.
"""

from __future__ import annotations

from typing import Any

#: A parsed pattern: ("set", frozenset[int]) | ("cat", list) | ("alt", list) |
#: ("rep", node, lo, hi | None).
Node = tuple[Any, ...]

#: At most this many alternative literal starts are kept for a pattern (past it: none).
MAX_PREFIXES = 16


def literal_prefix(node: Node) -> tuple[bytes, ...]:
    """Literal starts, one of which every match of ``node`` begins with (() if unknown).

    ``/api/v[0-9]+`` -> ``(b"/api/v",)``; ``(?:/a|/b)/x`` -> ``(b"/a/x", b"/b/x")``;
    ``.*x`` -> ``()``.  Empty starts are never returned (they would skip nothing).
    """
    starts, _ = _starts(node)
    if not starts or b"" in starts:
        return ()
    return tuple(sorted(starts))


def _starts(node: Node) -> tuple[set[bytes], bool]:
    """(the literal starts of ``node``, whether they are all of it: nothing may follow)."""
    tag = node[0]
    if tag == "set":
        if 0 < len(node[1]) <= 4:
            return {bytes([b]) for b in node[1]}, True
        return {b""}, False
    if tag == "alt":
        out: set[bytes] = set()
        complete = True
        for branch in node[1]:
            got, whole = _starts(branch)
            out |= got
            complete &= whole
        if len(out) > MAX_PREFIXES:
            return {b""}, False
        return out, complete
    if tag == "rep":
        _, body, lo, _hi = node
        if lo == 0:
            return {b""}, False
        got, _ = _starts(body)
        return got, False
    acc: set[bytes] = {b""}
    for item in node[1]:
        got, whole = _starts(item)
        product = {a + b for a in acc for b in got}
        if len(product) > MAX_PREFIXES:
            return acc, False
        acc = product
        if not whole:
            return acc, False
    return acc, True


def required_bytes(node: Node) -> bytes:
    """The longest run of literal bytes in the top-level sequence (every match has it)."""
    if node[0] != "cat":
        return b""
    best = run = b""
    for item in node[1]:
        if item[0] == "set" and len(item[1]) == 1:
            run += bytes(item[1])
            best = max(best, run, key=len)
        else:
            run = b""
    return best
