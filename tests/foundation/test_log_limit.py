"""The per-cause log budget: first line at once, then one per window with a suppressed count."""

from __future__ import annotations

import logging

import pytest

from foundation.log_limit import CauseEntry, LogLimiter, admit


def test_admit_logs_first_then_once_per_window() -> None:
    entry, n = admit(None, 0.0, 60.0)
    assert n == 0
    entry, n = admit(entry, 10.0, 60.0)
    assert n is None and entry == CauseEntry(0.0, 1)
    entry, n = admit(entry, 59.9, 60.0)
    assert n is None and entry.suppressed == 2
    entry, n = admit(entry, 60.0, 60.0)
    assert n == 2 and entry == CauseEntry(60.0, 0)


def test_limiter_keys_by_cause_and_is_bounded(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="t")
    log = logging.getLogger("t")
    limiter = LogLimiter(window_s=60.0, max_causes=2)
    assert limiter.log(log, logging.WARNING, "a", "x %s", 1, now=0.0)
    assert not limiter.log(log, logging.WARNING, "a", "x %s", 2, now=1.0)
    assert limiter.log(log, logging.WARNING, "b", "y", now=2.0)  # another cause is not hidden
    assert limiter.log(log, logging.WARNING, "c", "z", now=3.0)  # evicts "a" (oldest)
    assert limiter.log(log, logging.WARNING, "a", "x %s", 3, now=4.0)  # forgotten: logs again
    assert not limiter.log(log, logging.WARNING, "c", "z", now=5.0)
    assert limiter.log(log, logging.WARNING, "c", "z", now=63.0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        "x 1",
        "y",
        "z",
        "x 3",
        "z (1 more like this suppressed since the last such line)",
    ]
    assert all(r.filename == "test_log_limit.py" for r in caplog.records)
