"""``isthmus demo``: the multi-site overlay on this machine, from the embedded default config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import trio

from gateway.config.errors import ConfigInvalid
from gateway.demo.runner import DemoFailed, run_demo
from gateway.demo.topology import default_topology, load_topology


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo", help="run a multi-site overlay on this machine (three sites on loopback)"
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(".isthmus/demo"),
        help="state directory: CAs, SVIDs, configs, logs (default: .isthmus/demo)",
    )
    parser.add_argument(
        "--topology", type=Path, help="topology TOML (default: the embedded three-site demo)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        help="stop after this many seconds once converged (default: run until Ctrl-C)",
    )
    parser.set_defaults(func=_run)


def _demo_failure(exc: BaseException) -> str | None:
    """A user-facing reason if ``exc`` (possibly a trio exception group) is a demo failure."""
    if isinstance(exc, DemoFailed):
        return str(exc)
    if isinstance(exc, trio.TooSlowError):
        return f"the overlay did not converge: {exc}"
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _demo_failure(inner)
            if found is not None:
                return found
    return None


def _run(args: argparse.Namespace) -> int:
    try:
        if args.topology is not None:
            topology = load_topology(args.topology.read_text("utf-8"), filename=str(args.topology))
        else:
            topology = default_topology()
    except ConfigInvalid as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"isthmus demo: {exc}", file=sys.stderr)
        return 2
    try:
        trio.run(lambda: run_demo(topology, args.dir, duration=args.duration))
    except KeyboardInterrupt:
        print("\nstopped: every process the demo started has been stopped.")
    except BaseException as exc:
        failure = _demo_failure(exc)
        if failure is None:
            raise
        print(f"isthmus demo: {failure}", file=sys.stderr)
        return 1
    return 0
