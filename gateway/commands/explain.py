"""``isthmus explain URL``: how the gateway would route one request, without sending it.

Asks the admin API's ``GET /explain`` (:mod:`gateway.admin.explain_view`) and prints the
trace: the route matched, each candidate site in failover order and why it was chosen or
skipped, the destination's policy verdict (asked of that gateway over the link), the endpoint
that would be chosen, and the limits that apply.  ``-H 'name: value'`` adds request headers
(they are sent to the admin API and to the destination gateway, never printed back).
``--from SITE`` names the site the request enters at: a peer site's gateway computes the
trace (asked over the link by the gateway of ``--admin``), and the output says which site
computed it.
Exit codes: 0 the request would reach an endpoint, 1 it would be refused (the trace says
why), 2 bad arguments or a question refused (an unknown ``--from`` site, a site that does not
explain its routing to this one or cannot), 3 the admin API unreachable, or the ``--from``
site unreachable (its link down, no answer in time).
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from typing import Any

from gateway.commands.admin_api import AdminError, get_json_status
from gateway.commands.status import add_admin_arguments, admin_base
from gateway.commands.status_view import EXIT_DEGRADED, EXIT_OK, EXIT_UNREACHABLE, EXIT_USAGE

TIMEOUT_S = 30.0  # a peer has 5 s (--from: 20 s) to answer; the admin API bounds a query at 60 s
#: Answers of the admin API that are a refused question (exit 2) or an unreachable site (3).
REFUSED = (400, 403, 501)
UNREACHABLE = (502, 503, 504)


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "explain", help="show how a request would be routed, without sending it"
    )
    parser.add_argument("url", help="e.g. http://api.default.isthmus/path")
    parser.add_argument("-X", "--method", default="GET", help="request method (default GET)")
    parser.add_argument(
        "-H", "--header", action="append", default=[], metavar="'NAME: VALUE'", help="a header"
    )
    parser.add_argument(
        "--from", dest="origin", metavar="SITE", help="the site the request enters at"
    )
    parser.add_argument("--caller-id", metavar="SPIFFE_ID", help="the caller's SPIFFE ID")
    add_admin_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print the trace as JSON")
    parser.set_defaults(func=_explain)


def render(trace: dict[str, Any]) -> str:
    """The readable trace."""
    out = []
    computed_by, through = trace.get("computed_by"), trace.get("asked_through")
    if computed_by and through:
        out.append(f"from     site {computed_by} (its gateway's trace, asked through {through})")
    elif computed_by:
        out.append(f"from     site {computed_by} (this gateway)")
    out.append(f"request  {trace['authority']}  (route: {trace.get('route') or 'default'})")
    for i, c in enumerate(trace.get("candidates", []), 1):
        extra = []
        if c.get("policy"):
            extra.append(f"policy {c['policy']}")
        ep = c.get("endpoint")
        if ep:
            how = f"{ep['protocol']}, {ep['balancer']}"
            extra.append(f"endpoint {ep['address']}:{ep['port']} ({how})")
        tail = f"  [{'; '.join(extra)}]" if extra else ""
        head = f"  {i}. {c['site']:<12} {c['decision']:<11} link {c['link']:<5}"
        out.append(f"{head} {c['reason']}{tail}")
    status = trace.get("status")
    out.append(f"outcome  {trace['outcome']}" + ("" if status is None else f"  (HTTP {status})"))
    limits = trace.get("limits") or {}
    if limits:
        out.append("limits   " + ", ".join(f"{k}={v}" for k, v in limits.items()))
    out.append("nothing was sent")
    return "\n".join(out)


def _explain(args: argparse.Namespace) -> int:
    url = admin_base(args, "explain")
    if url is None:
        return EXIT_USAGE
    params: list[tuple[str, str]] = [("url", args.url), ("method", args.method)]
    params += [("header", h) for h in args.header]
    if args.origin:
        params.append(("from", args.origin))
    if args.caller_id:
        params.append(("caller_id", args.caller_id))
    query = urllib.parse.urlencode(params)
    try:
        status, trace = get_json_status(
            f"{url}/explain?{query}", timeout=TIMEOUT_S, allow=REFUSED + UNREACHABLE
        )
    except AdminError as exc:
        print(f"isthmus explain: {exc}", file=sys.stderr)
        return EXIT_UNREACHABLE
    if not isinstance(trace, dict):
        print("isthmus explain: unexpected answer (not a JSON object)", file=sys.stderr)
        return EXIT_UNREACHABLE
    if "error" in trace:
        print(f"isthmus explain: {trace['error']}", file=sys.stderr)
        return EXIT_UNREACHABLE if status in UNREACHABLE else EXIT_USAGE
    print(json.dumps(trace, indent=2, sort_keys=True) if args.json else render(trace))
    return EXIT_OK if trace.get("status") is None else EXIT_DEGRADED
