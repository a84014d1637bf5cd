"""The interleaved comparison of ``bench_stall.py``'s churn-ab phase: each request is counted on
the side (load on / off) it was sent in, once that side has settled, and never on both."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path

import pytest

MODULE = Path(__file__).resolve().parents[2] / "scripts" / "bench" / "interleave.py"
_spec = importlib.util.spec_from_file_location("bench_interleave", MODULE)
assert _spec is not None and _spec.loader is not None
interleave = importlib.util.module_from_spec(_spec)
sys.modules["bench_interleave"] = interleave  # a dataclass module must be importable by name
_spec.loader.exec_module(interleave)
Sides, sides = interleave.Sides, interleave.sides


def test_requests_go_to_the_side_they_were_sent_in_once_it_settled() -> None:
    # Off from 0, on at 10, off at 20, on at 30.
    toggles = [(10.0, True), (20.0, False), (30.0, True)]
    timed = [
        (2.0, 0.001),  # off since the start (settled)
        (10.5, 0.900),  # on, but its first burst may not have come yet: left out
        (12.0, 0.020),  # on
        (19.9, 0.030),  # on
        (20.5, 0.800),  # off, the last burst's work may not be over: left out
        (22.0, 0.002),  # off
        (31.5, 0.040),  # on again
    ]
    split = sides(timed, toggles, settle_on_s=1.0, settle_off_s=1.5, start_at=0.0)
    assert split.on == (0.020, 0.030, 0.040)
    assert split.off == (0.001, 0.002)
    assert split.left_out == 2


def test_a_side_that_started_on_and_the_quantiles() -> None:
    split = sides(
        [(0.5, 0.01), (2.0, 0.05)],
        [],
        settle_on_s=1.0,
        settle_off_s=1.5,
        start_on=True,
        start_at=0.0,
    )
    assert (split.on, split.off, split.left_out) == ((0.05,), (), 1)
    assert Sides.quantile(split.on, 0.99) == 0.05
    assert math.isnan(Sides.quantile(split.off, 0.99))
    assert Sides.quantile(tuple(float(i) for i in range(100)), 0.99) == 99.0


def test_toggles_out_of_order_are_refused() -> None:
    with pytest.raises(ValueError, match="time order"):
        sides([], [(2.0, True), (1.0, False)], settle_on_s=1.0, settle_off_s=1.0)
