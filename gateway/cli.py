"""The ``isthmus`` command line.

Each command group lives in its own ``gateway/commands/<name>.py`` module exposing
``register(subparsers)``; this file only wires them together, so adding a command never means
editing another command's code.  Exit codes: 0 ok, 1 runtime failure, 2 bad input/config.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

# Command modules, in help order.  Each defines register(subparsers) -> None and sets
# ``func(args) -> int`` on the parsers it adds.
COMMAND_MODULES: tuple[str, ...] = (
    "gateway.commands.run",
    "gateway.commands.config",
    "gateway.commands.reload",
    "gateway.commands.status",
    "gateway.commands.fleet",
    "gateway.commands.explain",
    "gateway.commands.ca",
    "gateway.commands.catalog",
    "gateway.commands.demo",
    "gateway.commands.worker",  # hidden: started by a supervisor (docs/workers.md)
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="isthmus",
        description="Isthmus: a multi-cluster east-west gateway and overlay network.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # that command is not built yet
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return 2
    result: int = func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
