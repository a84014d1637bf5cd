"""``isthmus config check FILE``: validate a gateway config and print every problem."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from gateway.config.check import check_file
from gateway.config.errors import Problem


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("config", help="work with config files")
    csub = parser.add_subparsers(dest="config_command", metavar="SUBCOMMAND", required=True)
    check = csub.add_parser("check", help="validate a gateway config (prints 'ok' or errors)")
    check.add_argument("file", type=Path)
    check.set_defaults(func=_check)


def _check(args: argparse.Namespace) -> int:
    report = check_file(args.file)
    for warning in report.warnings:
        shown = Problem(warning.path, f"warning: {warning.message}", warning.line)
        print(shown.render(report.filename), file=sys.stderr)
    if report.problems:
        for problem in report.problems:
            print(problem.render(report.filename), file=sys.stderr)
        n = len(report.problems)
        print(f"{n} problem{'s' if n != 1 else ''} found", file=sys.stderr)
        return 2
    n = len(report.warnings)
    print(f"ok ({n} warning{'s' if n != 1 else ''})" if n else "ok")
    return 0
