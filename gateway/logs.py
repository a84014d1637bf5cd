"""Logging set-up: one line per event, ``time level logger message``, to stderr, redacted.

Two rules a gateway's logs must keep, whatever the level:

* **No credentials.**  The handler's formatter passes every finished line, traceback
  included, through :func:`foundation.redact.redact`, so no code path (ours or a library's)
  can write an ``Authorization`` header, a cookie or a token.
* **Our debug is ours.**  ``--log-level debug`` lowers only Isthmus's own loggers
  (:data:`OWN_LOGGERS`); third-party libraries (hpack, h2, zeroconf, urllib3, ...) stay at
  WARNING -- at DEBUG hpack alone wrote ~9 of every 10 lines, one per header field.  A
  library's debug output is there when asked for by name: ``debug,hpack=debug``.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

from foundation.redact import redact

#: The top-level logger names of Isthmus's own code (``isthmus.*`` and module loggers).
OWN_LOGGERS = ("isthmus", "gateway", "overlay", "discovery")
LEVELS = ("debug", "info", "warning", "error")
#: The least that third-party loggers show unless a spec names them.
THIRD_PARTY_LEVEL = logging.WARNING


@dataclass(frozen=True, slots=True)
class LogSpec:
    """``level`` for Isthmus's loggers, plus explicit ``(logger, level)`` overrides."""

    level: str = "info"
    overrides: tuple[tuple[str, str], ...] = ()

    def text(self) -> str:
        """The spec as :func:`parse_log_spec` reads it (a supervisor hands it to its
        workers' command lines)."""
        return ",".join([self.level, *(f"{name}={level}" for name, level in self.overrides)])


def parse_log_spec(text: str) -> LogSpec:
    """``"debug"``, ``"info,hpack=debug,zeroconf=info"``; ``ValueError`` saying what is wrong.

    The first item without ``=`` is the level of Isthmus's own loggers (default ``info``);
    each ``name=level`` sets the logger ``name`` (and its children), ours or a library's.
    """
    level = "info"
    overrides: list[tuple[str, str]] = []
    seen_level = False
    for raw in text.split(","):
        item = raw.strip().lower()
        if not item:
            raise ValueError(f"empty item in log spec {text!r}")
        name, eq, value = item.partition("=")
        if not eq:
            name, value = "", item
        if value not in LEVELS:
            raise ValueError(f"unknown log level {value!r} (one of {', '.join(LEVELS)})")
        if not name:
            if seen_level:
                raise ValueError(f"more than one level without a logger name in {text!r}")
            level, seen_level = value, True
        elif not all(part for part in name.split(".")) or any(c.isspace() for c in name):
            raise ValueError(f"{name!r} is not a logger name")
        else:
            overrides.append((name, value))
    return LogSpec(level, tuple(overrides))


class RedactingFormatter(logging.Formatter):
    """A formatter whose every line, traceback included, has credentials redacted."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(
    spec: str | LogSpec = "info", *, site: str | None = None, worker: int | None = None
) -> None:
    """Send every log line to stderr through :class:`RedactingFormatter`, levels per ``spec``.

    A worker process (``worker`` its index) shares the supervisor's stderr: its lines say
    ``[site worker=i]`` so that one stream still tells the processes apart.
    """
    if isinstance(spec, str):
        spec = parse_log_spec(spec)
    tags = [t for t in (site, None if worker is None else f"worker={worker}") if t]
    prefix = f"[{' '.join(tags)}] " if tags else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        RedactingFormatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
    )
    own = logging.getLevelName(spec.level.upper())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(max(THIRD_PARTY_LEVEL, own))
    for name in OWN_LOGGERS:
        logging.getLogger(name).setLevel(own)
    for name, level in spec.overrides:
        logging.getLogger(name).setLevel(level.upper())
