"""Logging set-up: one line per event, ``time level logger message``, to stderr."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "info", *, site: str | None = None) -> None:
    prefix = f"[{site}] " if site else ""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter(f"%(asctime)s %(levelname)s {prefix}%(name)s: %(message)s")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
