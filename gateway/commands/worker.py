"""``isthmus worker CONFIG --index I --channel-fd X --handoff-fd Y``: one data-plane worker.

Hidden from ``--help``: only a supervisor (``isthmus run`` with ``[site] workers``) starts
it, with the two inherited file descriptors it names (docs/workers.md).  Exit codes as every
command: 0 drained, 1 runtime failure, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import os
import stat
import sys
from pathlib import Path
from typing import Any

from gateway.logs import LogSpec, parse_log_spec

# The largest index a worker can have (``[site] workers`` is at most 64).
MAX_INDEX = 63


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("worker", help=argparse.SUPPRESS)
    parser.add_argument("config", type=Path, help="gateway config (TOML)")
    parser.add_argument("--index", type=_index, required=True, help="this worker's index")
    parser.add_argument(
        "--channel-fd", type=_fd, required=True, help="the supervisor's control socket"
    )
    parser.add_argument(
        "--handoff-fd", type=_fd, required=True, help="the socket handed-off links go to"
    )
    parser.add_argument("--log-level", default=parse_log_spec("info"), type=_log_spec)
    parser.set_defaults(func=_run)
    _hide(sub, "worker")


def _hide(sub: Any, name: str) -> None:
    """Leave ``name`` out of the command list ``isthmus --help`` prints (argparse still lists a
    sub-parser whose help is SUPPRESS, as an empty line)."""
    sub._choices_actions[:] = [a for a in sub._choices_actions if a.dest != name]


def _run(args: argparse.Namespace) -> int:
    for option, fd in (("--channel-fd", args.channel_fd), ("--handoff-fd", args.handoff_fd)):
        problem = _socket_problem(fd)
        if problem:
            print(f"isthmus worker: {option} {fd}: {problem}", file=sys.stderr)
            return 2
    from gateway.workers.worker_main import run_worker

    return run_worker(args.config, args.index, args.channel_fd, args.handoff_fd, args.log_level)


def _socket_problem(fd: int) -> str | None:
    """Why ``fd`` is not an inherited socket (a worker started by hand has none)."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError as exc:
        return exc.strerror or "not open"
    return None if stat.S_ISSOCK(mode) else "not a socket"


def _index(text: str) -> int:
    value = _int(text)
    if not 0 <= value <= MAX_INDEX:
        raise argparse.ArgumentTypeError(f"must be 0..{MAX_INDEX}, not {value}")
    return value


def _fd(text: str) -> int:
    value = _int(text)
    if value < 3:  # 0-2 are stdio: never the supervisor's sockets
        raise argparse.ArgumentTypeError(f"must be an inherited descriptor (>= 3), not {value}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None


def _log_spec(text: str) -> LogSpec:
    try:
        return parse_log_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
