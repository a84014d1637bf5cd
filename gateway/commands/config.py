"""``isthmus config check FILE``: validate a gateway config and print every problem."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.config.errors import ConfigInvalid
from gateway.config.load import load_file


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("config", help="work with config files")
    csub = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    check = csub.add_parser("check", help="validate a gateway config (prints 'ok' or errors)")
    check.add_argument("file", type=Path)
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    try:
        load_file(args.file)
    except ConfigInvalid as exc:
        print(exc.report(), file=sys.stderr)
        n = len(exc.problems)
        print(f"{n} problem{'s' if n != 1 else ''} found", file=sys.stderr)
        return 2
    print("ok")
    return 0
