"""The foundation's shared helpers."""

from __future__ import annotations

from foundation.errors import first_leaf


class Skipped(Exception):
    pass


def test_first_leaf_is_depth_first_and_skips_what_it_is_told() -> None:
    a, b, c = ValueError("a"), KeyError("b"), Skipped()
    group = BaseExceptionGroup("outer", [BaseExceptionGroup("inner", [c, a]), b])
    assert first_leaf(group) is c
    assert first_leaf(group, skip=(Skipped,)) is a
    assert first_leaf(BaseExceptionGroup("only", [c]), skip=(Skipped,)) is None
    assert first_leaf(b) is b
