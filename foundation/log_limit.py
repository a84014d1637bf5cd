"""Rate-limited log lines, one budget per *cause*: the first occurrence is logged at once, then
at most one line per cause per window, carrying how many were suppressed in between.

Why: a listener that rejects a client certificate may see the same rejection a thousand times
a second (a misconfigured caller in a retry loop, a peer whose bundle lost our trust domain).
A line per connection floods the log and costs CPU; no line at all leaves the operator with an
unexplained EOF at the other end.  Keyed by cause, a new kind of rejection is never hidden
behind an old one.

The decision (:func:`admit`) is pure and takes ``now``; :class:`LogLimiter` holds the per-cause
entries, bounded in number (the least recently logged cause is forgotten first).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

__all__ = ["CauseEntry", "LogLimiter", "admit"]


@dataclass(frozen=True, slots=True)
class CauseEntry:
    """When a cause was last logged and how many of it were suppressed since."""

    logged_at: float
    suppressed: int = 0


def admit(entry: CauseEntry | None, now: float, window_s: float) -> tuple[CauseEntry, int | None]:
    """Decide one occurrence: ``(new entry, None)`` to suppress it, or ``(new entry, n)`` to
    log it, ``n`` being how many occurrences were suppressed before it."""
    if entry is None or now - entry.logged_at >= window_s:
        return CauseEntry(logged_at=now), 0 if entry is None else entry.suppressed
    return CauseEntry(entry.logged_at, entry.suppressed + 1), None


class LogLimiter:
    """At most one log line per cause per ``window_s`` (see the module docstring)."""

    def __init__(self, window_s: float = 60.0, max_causes: int = 256) -> None:
        if window_s <= 0 or max_causes <= 0:
            raise ValueError("window_s and max_causes must be positive")
        self.window_s = window_s
        self.max_causes = max_causes
        self._entries: dict[str, CauseEntry] = {}

    def log(
        self,
        logger: logging.Logger,
        level: int,
        cause: str,
        msg: str,
        *args: object,
        now: float,
        **kwargs: object,
    ) -> bool:
        """Log ``msg % args`` unless ``cause`` was logged less than ``window_s`` ago; return
        whether a line was written.  ``kwargs`` go to ``logger.log`` (e.g. ``extra``)."""
        entry, suppressed = admit(self._entries.get(cause), now, self.window_s)
        if cause not in self._entries and len(self._entries) >= self.max_causes:
            oldest = min(self._entries, key=lambda c: self._entries[c].logged_at)
            del self._entries[oldest]
        self._entries[cause] = entry
        if suppressed is None:
            return False
        if suppressed:
            msg += " (%d more like this suppressed since the last such line)"
            args = (*args, suppressed)
        logger.log(level, msg, *args, stacklevel=2, **kwargs)  # type: ignore[arg-type]
        return True
