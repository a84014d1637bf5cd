"""``isthmus reload CONFIG``: tell the gateway running CONFIG to reload it.

How it reaches the gateway: through its admin API (``POST /config/reload`` on the ``admin``
listener named in CONFIG, or ``--admin URL``), not a pid file: the answer carries the outcome
(applied, unchanged, or rejected with every problem), which a signal cannot.  CONFIG is
validated here first, so an invalid file is reported without disturbing the gateway; the
gateway validates it again (it reads the file itself).  Exit codes: 0 applied or unchanged,
2 rejected or invalid, 1 gateway unreachable.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from gateway.config.errors import ConfigInvalid
from gateway.config.load import load_file

TIMEOUT_S = 90.0  # the gateway bounds a reload at 60 s
MAX_REPLY_BYTES = 1024 * 1024
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback, no proxy


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "reload", help="make a running gateway reload its config (via its admin API)"
    )
    parser.add_argument("config", type=Path, help="the config file the gateway runs")
    parser.add_argument(
        "--admin",
        metavar="URL",
        help="admin API base URL (default: from the admin listener in CONFIG)",
    )
    parser.set_defaults(func=_reload)


def admin_url(config_path: Path) -> str:
    """The admin API URL of the gateway running ``config_path`` (wildcards become loopback)."""
    config = load_file(config_path)
    admin = config.listener("admin")
    if admin is None:
        raise ValueError("the config has no listener of kind 'admin'; pass --admin URL")
    if admin.port == 0:
        raise ValueError("the admin listener has port 0 (any); pass --admin URL")
    host = str(admin.address)
    if admin.address.is_unspecified:
        host = "127.0.0.1" if admin.address.version == 4 else "::1"
    if admin.address.version == 6:
        host = f"[{host}]"
    return f"http://{host}:{admin.port}"


def _reload(args: argparse.Namespace) -> int:
    try:
        url = args.admin.rstrip("/") if args.admin else admin_url(args.config)
    except ConfigInvalid as exc:
        print(exc.report(), file=sys.stderr)
        print("not reloaded: the config is invalid (the gateway keeps running)", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(f"isthmus reload: {exc}", file=sys.stderr)
        return 2
    request = urllib.request.Request(url + "/config/reload", data=b"", method="POST")
    try:
        with _OPENER.open(request, timeout=TIMEOUT_S) as response:
            doc = json.loads(response.read(MAX_REPLY_BYTES))
    except urllib.error.HTTPError as exc:
        try:
            doc = json.loads(exc.read(MAX_REPLY_BYTES))
        except ValueError:
            print(f"isthmus reload: {url}: HTTP {exc.code}", file=sys.stderr)
            return 1
    except (urllib.error.URLError, OSError, ValueError) as exc:
        print(f"isthmus reload: cannot reach the gateway at {url}: {exc}", file=sys.stderr)
        return 1
    return _report(doc)


def _report(doc: dict[str, Any]) -> int:
    result = doc.get("result")
    if result == "rejected":
        for p in doc.get("problems", []):
            where = f"line {p['line']}: " if p.get("line") else ""
            print(f"{where}{p['path']}: {p['message']}", file=sys.stderr)
        print(f"rejected; version {doc.get('version')} keeps running", file=sys.stderr)
        return 2
    if result == "applied":
        print(f"applied version {doc.get('version')} ({', '.join(doc.get('changes', []))})")
        for p in doc.get("problems", []):  # applied, but not everywhere (a listener, a worker)
            print(f"applied, but {p['path']}: {p['message']}", file=sys.stderr)
        return 0
    if result == "unchanged":
        print(f"unchanged; version {doc.get('version')} runs")
        return 0
    print(f"isthmus reload: unexpected answer: {doc}", file=sys.stderr)
    return 1
