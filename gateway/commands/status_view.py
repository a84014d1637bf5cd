"""``isthmus status``'s judgement and table, as pure functions of the admin API's documents.

Why pure: what counts as *degraded* is a rule operators script against (the exit code), so it
is one function of the documents the gateway serves (``/healthz``, ``/links``, ``/imports``,
``/routes``, ``/catalog``), tested without a gateway.  Degraded means any of: the gateway's
own identity is not ok; a configured peer's link is down (or one of its replicas':
docs/replicas.md); a peer's imports are stale (its
federation stream ended, the grace is running); a discovery source is stale or expired; an
endpoint of the local catalog is stale (its source stopped confirming it); with worker
processes (``/workers``, docs/workers.md): a worker is not up, or a worker has no link to a
peer site the supervisor reaches (the requests that worker takes to that site fail over).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: Exit codes of ``isthmus status`` (and ``isthmus explain`` for the last two).
EXIT_OK = 0
EXIT_DEGRADED = 1
EXIT_USAGE = 2  # bad arguments or config
EXIT_UNREACHABLE = 3  # the admin API did not answer, or answered something unexpected


def _f(value: Any) -> str:
    return "-" if value is None else (f"{value:.3f}" if isinstance(value, float) else str(value))


def assess(docs: Mapping[str, Any]) -> dict[str, Any]:
    """The status document: the parts of each admin view an operator reads, and ``problems``
    (empty: healthy).  ``docs`` maps each admin path to its JSON."""
    problems: list[str] = []
    health = docs.get("/healthz") or {}
    if health.get("status") != "ok":
        problems.append(f"identity: {health.get('reason', 'not ok')}")
    links = []
    for name, link in sorted((docs.get("/links") or {}).items()):
        rtt = link.get("ping_rtt_s")
        links.append(
            {
                "peer": name,
                "state": "up" if link.get("up") else "down",
                "rtt_ms": None if rtt is None else round(rtt * 1000, 3),
                "trust_domain": link.get("trust_domain"),
                "up_for_s": link.get("up_for_s"),
                "last_error": link.get("last_error"),
                "open_streams": link.get("open_streams"),
                "reconnects": link.get("reconnects"),
                "export_ack_lag_s": link.get("export_ack_lag_s"),
            }
        )
        if not link.get("up"):
            why = link.get("last_error") or "no live link"
            problems.append(f"link to {name} is down ({why})")
        else:  # a site of several gateways is up while one is; fewer is still worth a look
            replicas = link.get("replicas") or []
            down = [r.get("address") for r in replicas if not r.get("up")]
            if len(replicas) > 1 and down:
                up = len(replicas) - len(down)
                problems.append(
                    f"{name}: {up} of {len(replicas)} replicas up ({', '.join(down)} down)"
                )
    imports = []
    for peer in (docs.get("/imports") or {}).get("peers", []):
        imports.append(
            {
                "peer": peer.get("site"),
                "version": peer.get("version"),
                "stale": bool(peer.get("stale")),
                "confirmed_age_s": peer.get("confirmed_age_s"),
                "withdraw_in_s": peer.get("withdraw_in_s"),
                "services": len(peer.get("services", [])),
            }
        )
        if peer.get("stale"):
            problems.append(f"imports from {peer.get('site')} are stale")
    catalog = docs.get("/catalog") or {}
    sources = []
    for source in catalog.get("sources", []):
        sources.append(
            {
                "name": source.get("name"),
                "stale": bool(source.get("stale")),
                "expired": bool(source.get("expired")),
                "confirmed_age_s": source.get("confirmed_age_s"),
            }
        )
        if source.get("stale") or source.get("expired"):
            state = "expired" if source.get("expired") else "stale"
            why = f": {source['reason']}" if source.get("reason") else ""
            problems.append(f"source {source.get('name')} is {state}{why}")
    endpoints = catalog.get("endpoints", [])
    counts = {
        "endpoints": len(endpoints),
        "healthy": sum(1 for e in endpoints if e.get("healthy") and not e.get("stale")),
        "unhealthy": sum(1 for e in endpoints if not e.get("healthy")),
        "stale": sum(1 for e in endpoints if e.get("stale")),
        "ejected": sum(1 for e in endpoints if e.get("ejected")),
    }
    if counts["stale"]:
        problems.append(f"catalog: {counts['stale']} stale endpoint(s)")
    routes = (docs.get("/routes") or {}).get("routes", {})
    owned, warnings = owner_routes(docs.get("/routes") or {})
    workers = workers_of(docs.get("/workers"))
    if workers is not None:
        if workers["up"] < workers["count"]:
            problems.append(f"workers: {workers['up']} of {workers['count']} up")
        problems += worker_link_problems(docs.get("/links") or {})
    return {
        "site": health.get("site") or (docs.get("/routes") or {}).get("local_site"),
        "healthy": not problems,
        "problems": problems,
        "links": links,
        "imports": imports,
        "routes": {address: list(sites) for address, sites in sorted(routes.items())},
        "owner_routes": owned,
        "route_warnings": warnings,
        "catalog": {"version": catalog.get("version"), "sources": sources, **counts},
        **({} if workers is None else {"workers": workers}),
    }


def workers_of(doc: Any) -> dict[str, int] | None:
    """How many worker processes there are, serve and were restarted, from ``/workers``
    (``{"count": N, "workers": [...]}`` or a bare list of rows; a row is up when it says it
    serves -- ``serving``, else ``up`` --, else when it has a pid); None without worker
    processes (``/workers`` absent)."""
    if doc is None:
        return None
    rows = doc.get("workers", []) if isinstance(doc, Mapping) else doc
    if isinstance(rows, Mapping):
        rows = list(rows.values())
    up = sum(1 for r in rows if _serves(r))
    restarts = sum(int(r.get("restarts") or 0) for r in rows)
    count = doc.get("count", len(rows)) if isinstance(doc, Mapping) else len(rows)
    return {"count": max(int(count), len(rows)), "up": up, "restarts": restarts}


def _serves(row: Mapping[str, Any]) -> bool:
    for key in ("serving", "up"):
        if key in row:
            return bool(row[key])
    return row.get("pid") is not None


def worker_link_problems(links: Mapping[str, Any]) -> list[str]:
    """A worker without a link to a peer site the supervisor reaches (``/links``'s
    ``workers`` rows): that worker's requests to the site cannot use it."""
    out = []
    for name, link in sorted(links.items()):
        rows = link.get("workers") or []
        down = [str(w.get("worker")) for w in rows if not w.get("up")]
        if link.get("up") and down:
            out.append(
                f"{name}: worker {', '.join(down)} has no link ({len(rows) - len(down)} "
                f"of {len(rows)} workers linked)"
            )
    return out


def owner_routes(doc: Mapping[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """The routes followed from the sites that own their addresses, and what to look at: a
    conflict (sites sending different routes for one address) or a rejected imported route.
    Reported, not *degraded*: traffic flows, by the first site's routes or without the bad
    one."""
    rows, warnings = [], []
    for address, entry in sorted((doc.get("imported_routes") or {}).items()):
        rows.append({"address": address, **entry})
        if entry.get("conflict"):
            warnings.append(
                f"routes for {address}: {', '.join(entry['conflict'])} differ from "
                f"{entry['site']} (following {entry['site']})"
            )
    for r in doc.get("rejected_routes") or ():
        warnings.append(
            f"route {r['position']} of {r['service']} from {r['site']} rejected: {r['reason']}"
        )
    return rows, warnings


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    if not rows:
        return ["  (none)"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [
        "  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()
        for row in [header, *rows]
    ]


def render(status: Mapping[str, Any]) -> str:
    """The readable table of :func:`assess`'s document."""
    out = [f"site {status.get('site')}: {'healthy' if status['healthy'] else 'DEGRADED'}"]
    out.append("links")
    out += _table(
        ("PEER", "STATE", "RTT_MS", "TRUST_DOMAIN", "UP_FOR_S", "STREAMS", "RECONNECTS"),
        [
            (
                lk["peer"],
                lk["state"],
                _f(lk["rtt_ms"]),
                _f(lk["trust_domain"]),
                _f(lk["up_for_s"]),
                _f(lk.get("open_streams")),
                _f(lk.get("reconnects")),
            )
            for lk in status["links"]
        ],
    )
    out.append("imports")
    out += _table(
        ("PEER", "VERSION", "FRESH", "CONFIRMED_AGO_S", "SERVICES"),
        [
            (
                _f(i["peer"]),
                _f(i["version"]),
                "stale" if i["stale"] else "fresh",
                _f(i["confirmed_age_s"]),
                str(i["services"]),
            )
            for i in status["imports"]
        ],
    )
    out.append("routes (sites in failover order)")
    out += _table(
        ("ADDRESS", "SITES"),
        [(address, " > ".join(sites)) for address, sites in status["routes"].items()],
    )
    if status.get("owner_routes") or status.get("route_warnings"):
        out.append("routes followed from the owning site")
        out += _table(
            ("ADDRESS", "SITE", "ROUTES", "CONFLICT"),
            [
                (r["address"], r["site"], ", ".join(r["routes"]), ", ".join(r["conflict"]))
                for r in status.get("owner_routes", ())
            ],
        )
        out += [f"  ! {w}" for w in status.get("route_warnings", ())]
    cat = status["catalog"]
    out.append(
        f"catalog version {_f(cat['version'])}: {cat['endpoints']} endpoints, "
        f"{cat['healthy']} healthy, {cat['unhealthy']} unhealthy, {cat['stale']} stale, "
        f"{cat['ejected']} ejected"
    )
    out += _table(
        ("SOURCE", "STATE", "CONFIRMED_AGO_S"),
        [
            (
                _f(s["name"]),
                "expired" if s["expired"] else ("stale" if s["stale"] else "ok"),
                _f(s["confirmed_age_s"]),
            )
            for s in cat["sources"]
        ],
    )
    workers = status.get("workers")
    if workers is not None:
        restarts = workers["restarts"]
        out.append(
            f"workers: {workers['up']} of {workers['count']} up, "
            f"{restarts} restart{'' if restarts == 1 else 's'}"
        )
    if status["problems"]:
        out.append("problems")
        out += [f"  - {p}" for p in status["problems"]]
    return "\n".join(out)
