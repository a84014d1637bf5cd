"""The bounded copy of a request body for a route's mirror (pure: no trio, no time)."""

from __future__ import annotations

import pytest

from gateway.routes.mirror_copy import BodyCopy, MirrorBudget, admit, declared_length


def test_a_body_within_the_cap_is_copied_piece_by_piece_and_held_until_released() -> None:
    budget = MirrorBudget(100)
    copy = BodyCopy(10, budget)
    piece = bytearray(b"abc")  # a reader may hand out a buffer it reuses: the copy owns bytes
    assert copy.feed(piece) is None
    piece[:] = b"XYZ"
    assert copy.feed(b"defg") is None and copy.feed(b"") is None
    assert copy.finish(((b"x-sum", b"1"),)) is True
    assert copy.complete and copy.pieces() == (b"abc", b"defg") and copy.body() == b"abcdefg"
    assert copy.trailers == ((b"x-sum", b"1"),)
    assert (copy.held, budget.held, budget.peak) == (7, 7, 7)
    assert copy.drop("body_unfinished") is None  # a complete copy is not dropped late
    copy.release()
    assert (copy.held, budget.held, budget.peak) == (0, 0, 7)


def test_exactly_the_cap_is_kept_one_byte_more_drops_the_copy_and_gives_its_bytes_back() -> None:
    budget = MirrorBudget(100)
    exact = BodyCopy(8, budget)
    assert exact.feed(b"12345678") is None and exact.finish() is True
    over = BodyCopy(8, budget)
    assert over.feed(b"1234") is None and budget.held == 12
    assert over.feed(b"56789") == "body_too_large"
    assert over.dropped == "body_too_large" and over.held == 0 and budget.held == 8
    # Later pieces and the end of a dropped copy change nothing (and are not counted twice).
    assert over.feed(b"x") is None and over.finish() is False and over.drop("in_flight") is None
    assert over.pieces() == ()
    exact.release()
    assert budget.held == 0


def test_a_full_gateway_budget_drops_the_copy_that_does_not_fit_and_not_the_others() -> None:
    budget = MirrorBudget(10)
    first, second = BodyCopy(64, budget), BodyCopy(64, budget)
    assert first.feed(b"123456") is None
    assert second.feed(b"1234") is None and budget.held == 10
    assert second.feed(b"5") == "buffer_budget" and budget.held == 6
    assert first.feed(b"1234") is None and first.feed(b"5") == "buffer_budget"
    assert budget.held == 0
    # A limit lowered below what is held (a reload) refuses grants until bytes come back.
    held = BodyCopy(64, budget)
    assert held.feed(b"12345") is None
    budget.limit = 2
    assert BodyCopy(64, budget).feed(b"1") == "buffer_budget"
    held.drop("body_unfinished")
    assert budget.held == 0 and BodyCopy(64, budget).feed(b"1") is None


def test_a_copy_with_every_declared_byte_is_whole_before_the_end_is_read() -> None:
    budget = MirrorBudget(100)
    copy = BodyCopy(64, budget, expected=6)
    assert copy.feed(b"abc") is None and not copy.whole
    assert copy.feed(b"def") is None and copy.whole
    assert copy.finish() is True and not copy.whole  # complete now, not "whole but open"
    unknown = BodyCopy(64, budget)
    assert unknown.feed(b"abcdef") is None and not unknown.whole


def test_a_zero_cap_copies_no_body_but_an_empty_one() -> None:
    budget = MirrorBudget(10)
    assert BodyCopy(0, budget).finish() is True
    assert BodyCopy(0, budget).feed(b"x") == "body_too_large"
    assert admit(0, 0) is None and admit(1, 0) == "body_too_large"


def test_a_declared_length_over_the_cap_is_refused_before_any_byte() -> None:
    assert declared_length(((b"x-a", b"1"), (b"content-length", b"65537"))) == 65537
    assert declared_length(((b"x-a", b"1"),)) is None  # chunked, or HTTP/2 without one
    assert declared_length(((b"content-length", b"-1"),)) is None
    assert admit(65537, 65536) == "body_too_large"
    assert admit(65536, 65536) is None and admit(None, 65536) is None


def test_the_budget_refuses_bad_accounting() -> None:
    with pytest.raises(ValueError):
        MirrorBudget(-1)
    budget = MirrorBudget(4)
    assert budget.try_take(4) and not budget.try_take(1)
    with pytest.raises(ValueError):
        budget.give_back(5)
