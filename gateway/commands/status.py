"""``isthmus status``: the overlay as one site sees it, and an exit code for scripts.

Reads the gateway's admin API (``/healthz``, ``/links``, ``/imports``, ``/routes``,
``/catalog``) and prints sites, links (state, RTT, trust domain, how long up), imports
(version, freshness), routes in failover order and catalog health, as a table or ``--json``.
The judgement is :func:`gateway.commands.status_view.assess`.  Exit codes: 0 healthy,
1 degraded (a link down, stale imports, a stale source or endpoint, identity not ok),
2 bad arguments or config, 3 the admin API unreachable or not answering JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.commands.admin_api import AdminError, base_url, get_json
from gateway.commands.status_view import (
    EXIT_DEGRADED,
    EXIT_OK,
    EXIT_UNREACHABLE,
    EXIT_USAGE,
    assess,
    render,
)
from gateway.config.errors import ConfigInvalid

PATHS = ("/healthz", "/links", "/imports", "/routes", "/catalog")
TIMEOUT_S = 10.0


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "status", help="show the overlay as this site sees it (exit 1 when degraded)"
    )
    add_admin_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the status as JSON")
    parser.add_argument(
        "--fleet",
        nargs="*",
        metavar="ADMIN_URL",
        help="list the sites whose fleet version differs, and why (docs/fleet.md)",
    )
    parser.add_argument("--consul", metavar="URL", help="with --fleet: the fleet authority")
    parser.add_argument("--token-file", type=Path, help="with --consul: its ACL token file")
    parser.add_argument("--prefix", help="with --consul: the fleet KV prefix")
    parser.set_defaults(func=_status)


def add_admin_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--admin",
        metavar="URL",
        help="admin API base URL (default: from --config, else http://127.0.0.1:15000)",
    )
    parser.add_argument(
        "-c", "--config", type=Path, help="the gateway's config (to find its admin listener)"
    )


def admin_base(args: argparse.Namespace, command: str) -> str | None:
    """The admin URL from ``--admin``/``--config``; None after printing why it is bad."""
    try:
        return base_url(args.admin, args.config)
    except ConfigInvalid as exc:
        print(exc.report(), file=sys.stderr)
    except (ValueError, OSError) as exc:
        print(f"isthmus {command}: {exc}", file=sys.stderr)
    return None


def _status(args: argparse.Namespace) -> int:
    url = admin_base(args, "status")
    if url is None:
        return EXIT_USAGE
    if args.fleet is not None:
        from gateway.commands import fleet_status

        return fleet_status.main(args, url)
    docs: dict[str, Any] = {}
    try:
        for path in PATHS:
            docs[path] = get_json(url + path, timeout=TIMEOUT_S, allow=(503,))
    except AdminError as exc:
        print(f"isthmus status: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    workers = _optional_view(url, "/workers")  # None: no worker processes
    if workers is not None:
        docs["/workers"] = workers
    try:
        status = assess(docs)
    except (AttributeError, TypeError, KeyError) as exc:
        print(f"isthmus status: {url} answered something unexpected: {exc!r}", file=sys.stderr)
        return EXIT_UNREACHABLE
    fleet = _fleet_view(url)  # None: this gateway has no [fleet] source
    if fleet is not None:
        status["fleet"] = fleet
    print(json.dumps(status, indent=2, sort_keys=True) if args.json else render(status))
    if fleet is not None and not args.json:
        print(f"fleet: version {fleet.get('version') or '-'} ({fleet.get('state')})")
    return EXIT_OK if status["healthy"] else EXIT_DEGRADED


def _fleet_view(url: str) -> Any:
    """The gateway's ``/fleet`` view, or None when it has none (or does not answer it)."""
    return _optional_view(url, "/fleet")


def _optional_view(url: str, path: str) -> Any:
    """A view only some gateways have (``/fleet``, ``/workers``), or None without it."""
    try:
        return get_json(url + path, timeout=TIMEOUT_S)
    except AdminError:
        return None
