"""``isthmus status --fleet [ADMIN_URL ...]``: which sites run a fleet version other than the
expected one, and why.

Each site's ``/fleet`` admin view says the version it runs, the latest it read, and its state
(``current``, ``rejected`` with the problems, ``pending``, ``unreachable`` when its Consul
does not answer).  The expected version is the authority's (``--consul`` or ``-c CONFIG``
with a ``[fleet]`` Consul source), else the newest ``latest`` most sites read.  A site whose
admin API does not answer is ``unreachable`` too.  Exit codes: 0 every site runs the expected
version, 1 some differ, 3 no site answered.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from typing import Any

import trio

from discovery.sources.config import ConsulSourceConfig
from discovery.sources.consul_parse import ConsulError
from gateway.commands import fleet_site
from gateway.commands.admin_api import AdminError, get_json
from gateway.commands.fleet import authority
from gateway.config.errors import ConfigInvalid
from gateway.fleet.authority import Current, read_current
from gateway.fleet.consul_kv import open_kv

TIMEOUT_S = 5.0
EXIT_OK, EXIT_DIFFERS, EXIT_UNREACHABLE = 0, 1, 3


def main(args: argparse.Namespace, default_url: str) -> int:
    """``isthmus status --fleet``: the admin URLs given, else ``default_url``."""
    expected = None
    if args.consul or (args.config is not None and not fleet_site.wanted(args)):
        try:
            source, prefix = authority(args)
            current = trio.run(_read_current, source, prefix)
            expected = current.document.version if current.modify_index else None
        except (ConsulError, ConfigInvalid, ValueError, OSError) as exc:
            print(f"isthmus status --fleet: the authority: {exc}", file=sys.stderr)
    status = assess(fetch(args.fleet or [default_url]), expected)
    print(render(status, as_json=args.json))
    return exit_code(status)


async def _read_current(source: ConsulSourceConfig, prefix: str) -> Current:
    return await read_current(await open_kv(source), prefix)


def fetch(urls: list[str]) -> dict[str, Any]:
    """Each admin URL's ``/fleet`` view, or ``{"admin_unreachable": why}``."""
    out: dict[str, Any] = {}
    for url in urls:
        try:
            out[url] = get_json(url.rstrip("/") + "/fleet", timeout=TIMEOUT_S)
        except AdminError as exc:
            out[url] = {"admin_unreachable": str(exc)}
    return out


def assess(views: dict[str, Any], expected: str | None) -> dict[str, Any]:
    """Rows per site (site, url, version, state, why, differs) and the expected version.

    Pure: ``views`` as :func:`fetch` returns them; ``expected`` from the authority or None.
    """
    control = {u: v for u, v in views.items() if isinstance(v.get("sites"), list)}
    if expected is None and control:
        expected = next(iter(control.values())).get("latest")  # the control site's document
    if expected is None:
        read = [v.get("latest") for v in views.values() if isinstance(v.get("latest"), str)]
        expected = Counter(read).most_common(1)[0][0] if read else None
    rows = []
    for url, view in views.items():
        if "admin_unreachable" in view:
            why = f"admin API: {view['admin_unreachable']}"
            rows.append(_row(url, "?", None, "unreachable", why, True))
            continue
        version, state = view.get("version"), str(view.get("state", "pending"))
        why = ""
        rejected = view.get("rejected") or {}
        if state == "rejected" or (version != expected and rejected.get("version") == expected):
            state = "rejected"
            problems = rejected.get("problems") or []
            why = "; ".join(f"{p.get('path')}: {p.get('message')}" for p in problems[:3])
            why = f"version {rejected.get('version')}: {why}"
        elif state == "unreachable":
            why = f"its authority: {view.get('error') or ''}"
        elif version != expected:
            state = "pending"  # it has not read (or not yet applied) the expected version
        differs = version != expected
        rows.append(_row(url, str(view.get("site", "?")), version, state, why, differs))
    rows += _reported(control, expected, {r["site"] for r in rows})
    return {"expected": expected, "sites": rows, "consistent": not any(r["differs"] for r in rows)}


def _reported(
    control: dict[str, Any], expected: str | None, asked: set[str]
) -> list[dict[str, Any]]:
    """Rows for the sites a control site reports on (its pushes' answers), except those
    asked directly whose replicas all run its version: which rejected it and why, which it
    cannot reach, and of a site with several gateways which replica lags or is cut off."""
    rows = []
    for url, view in control.items():
        for site in view["sites"]:
            if not isinstance(site, dict):
                continue
            if site.get("site") in asked and not site.get("lagging"):
                continue
            name, version, state = str(site.get("site")), site.get("version"), site.get("state")
            why = ""
            if state == "rejected":
                why = str(site.get("reason") or "")
            elif state == "unreachable":
                why = f"no push stream from the control site since {site.get('down_since')}"
            elif state == "applied":
                state = "current" if version == expected else "pending"
            if state != "unreachable":
                why = "; ".join(w for w in (why, *_replica_notes(site)) if w)
            differs = not (state == "current" and version == expected)
            rows.append(_row(f"{url} (reported)", name, version, str(state), why, differs))
    return rows


def _replica_notes(site: dict[str, Any]) -> list[str]:
    """Of a site with several gateways: each replica that lags (its state and version) and
    each the control site cannot reach (since when; it holds nobody back)."""
    replicas = site.get("replicas")
    if not isinstance(replicas, list) or len(replicas) < 2:
        return []
    lagging = set(site.get("lagging") or [])
    notes = []
    for r in replicas:
        if not isinstance(r, dict):
            continue
        if r.get("replica") in lagging:
            notes.append(f"replica {r.get('replica')} lags: {r.get('state')} {r.get('version')}")
        elif r.get("state") == "unreachable":
            notes.append(f"replica {r.get('replica')} unreachable since {r.get('down_since')}")
    return notes


def _row(
    url: str, site: str, version: str | None, state: str, why: str, differs: bool
) -> dict[str, Any]:
    return {
        "url": url,
        "site": site,
        "version": version,
        "state": state,
        "why": why,
        "differs": differs,
    }


def render(status: dict[str, Any], *, as_json: bool) -> str:
    if as_json:
        return json.dumps(status, indent=2, sort_keys=True)
    lines = [f"expected fleet version: {status['expected'] or 'unknown'}"]
    for row in status["sites"]:
        mark = "DIFFERS" if row["differs"] else "ok"
        why = f"  {row['why']}" if row["why"] else ""
        lines.append(
            f"  {row['site']:<16} {row['version'] or '-':<13} {row['state']:<12} {mark}{why}"
        )
    return "\n".join(lines)


def exit_code(status: dict[str, Any]) -> int:
    if status["sites"] and all(
        r["state"] == "unreachable" and r["site"] == "?" for r in status["sites"]
    ):
        return EXIT_UNREACHABLE
    return EXIT_OK if status["consistent"] else EXIT_DIFFERS
