"""A worker process's life (written at the assembly; this is the placeholder its callers
import)."""

from __future__ import annotations

from pathlib import Path

from gateway.logs import LogSpec


def run_worker(
    config_path: Path, index: int, channel_fd: int, handoff_fd: int, log_spec: LogSpec
) -> int:
    """Serve as worker ``index`` until the supervisor says drain or its channel closes."""
    raise NotImplementedError("the worker process is assembled by the lead")
