"""``isthmus ca init|issue``: the development CA (see :mod:`overlay.identity.ca`).

``init`` creates a CA for one trust domain in ``./.isthmus/ca/<trust-domain>`` (or ``--dir``);
``issue`` signs a short-lived X509-SVID and writes ``svid.pem``, ``svid_key.pem`` and
``bundle.pem`` (SPIRE's layout) into ``--out`` (default: ``<ca dir>/svids/<path>``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from foundation.errors import IsthmusError
from foundation.spiffe_id import SpiffeId, TrustDomain
from overlay.identity.ca import DEFAULT_SVID_TTL, default_ca_dir, init_ca, issue_svid, parse_ttl


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "ca", help="development CA: create a trust domain, issue SVIDs"
    )
    csub = parser.add_subparsers(dest="ca_command", metavar="SUBCOMMAND", required=True)

    init = csub.add_parser("init", help="create a development CA for one trust domain")
    init.add_argument("--trust-domain", required=True, help="e.g. aws-east.isthmus.test")
    init.add_argument("--dir", type=Path, help="CA directory (default .isthmus/ca/<td>)")
    init.set_defaults(func=_init)

    issue = csub.add_parser("issue", help="issue a short-lived X509-SVID from a development CA")
    issue.add_argument("--spiffe-id", required=True, help="e.g. spiffe://td/gateway/aws-east")
    issue.add_argument("--dir", type=Path, help="CA directory (default .isthmus/ca/<td>)")
    issue.add_argument("--out", type=Path, help="output dir (default <ca dir>/svids/<path>)")
    issue.add_argument(
        "--ttl",
        default=f"{int(DEFAULT_SVID_TTL.total_seconds() // 3600)}h",
        help="lifetime: 90s, 30m, 24h, 7d (default 24h, at most 30d)",
    )
    issue.add_argument(
        "--host",
        action="append",
        default=[],
        metavar="HOST",
        help="also name this IP address or DNS name (repeatable), for callers such as curl "
        "that check the host name of a gateway's TLS listener",
    )
    issue.set_defaults(func=_issue)


def _init(args: argparse.Namespace) -> int:
    try:
        td = TrustDomain.parse(args.trust_domain)
        directory = args.dir or default_ca_dir(td)
        ca = init_ca(directory, td)
    except IsthmusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"created development CA for {td} in {directory}")
    print(f"  trust bundle: {ca.bundle_path} (also bundle.json, SPIFFE bundle format)")
    return 0


def _issue(args: argparse.Namespace) -> int:
    try:
        sid = SpiffeId.parse(args.spiffe_id)
        ttl = parse_ttl(args.ttl)
        ca_dir = args.dir or default_ca_dir(sid.trust_domain)
        out = args.out or ca_dir / "svids" / sid.path.strip("/").replace("/", "_")
        paths = issue_svid(ca_dir, sid, out, ttl, hosts=args.host)
    except IsthmusError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"issued {sid} (valid {args.ttl})")
    print(f"  svid:   {paths.svid}\n  key:    {paths.key}\n  bundle: {paths.bundle}")
    return 0
