"""``isthmus catalog CONFIG``: run the config's discovery sources briefly and print the catalog.

Why a settle time instead of "wait until complete": sources have no notion of complete (mDNS
answers trickle in, Consul may be down); the operator chooses how long to listen.  Each entry
shows where it came from and how fresh it is, which is what one needs when asking "why is the
gateway (not) routing to X?".  Exit codes: 0 ok, 1 a source kind is not available in this
installation, 2 bad config or arguments.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import trio

from discovery.service import serve_catalog
from discovery.snapshot import Catalog, CatalogEntry, SourceState
from discovery.sources.config import SourceConfig
from discovery.sources.registry import SourceUnavailable
from discovery.watch import Watch
from foundation.errors import ConfigError
from gateway.admin.sliced import Rows
from gateway.config.errors import ConfigInvalid
from gateway.config.load import load_file
from gateway.logs import RedactingFormatter

DEFAULT_SETTLE_S = 3.0
MAX_SETTLE_S = 3600.0


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "catalog",
        help="run the configured discovery sources for a while and print the catalog",
        description="Run the [[sources]] of a gateway config for --settle seconds, then print "
        "every endpoint with its service, address, protocol, health, sources and freshness.",
    )
    parser.add_argument("config", type=Path, metavar="CONFIG", help="gateway config (TOML)")
    parser.add_argument(
        "--settle",
        type=float,
        default=DEFAULT_SETTLE_S,
        metavar="SECONDS",
        help=f"how long to listen to the sources (default {DEFAULT_SETTLE_S:g})",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    settle: float = args.settle
    if not math.isfinite(settle) or not 0 <= settle <= MAX_SETTLE_S:
        print(f"isthmus catalog: --settle must be between 0 and {MAX_SETTLE_S:g}", file=sys.stderr)
        return 2
    try:
        config = load_file(args.config)
    except ConfigInvalid as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
        for handler in logging.getLogger().handlers:  # credentials never reach a log line
            handler.setFormatter(RedactingFormatter("%(levelname)s %(name)s: %(message)s"))
    try:
        catalog, now = trio.run(_collect, config.sources, settle)
    except BaseException as exc:
        leaf = _single_leaf(exc)
        if isinstance(leaf, SourceUnavailable):
            print(f"isthmus catalog: {leaf}", file=sys.stderr)
            return 1
        if isinstance(leaf, ConfigError):
            print(f"isthmus catalog: {args.config}: {leaf}", file=sys.stderr)
            return 2
        raise
    if args.json:
        print(json.dumps(catalog_json(catalog, now), indent=2))
    else:
        print(catalog_table(catalog, now))
    return 0


async def _collect(sources: tuple[SourceConfig, ...], settle: float) -> tuple[Catalog, float]:
    watch = Watch(Catalog())
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_catalog, sources, watch)
        await trio.sleep(settle)
        nursery.cancel_scope.cancel()
    return watch.latest, trio.current_time()


def _single_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _hostport(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


def _age(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _freshness(catalog: Catalog, entry: CatalogEntry, now: float) -> str:
    if not catalog.is_stale(entry):
        return "fresh"
    if catalog.is_routable(entry, now) or not entry.endpoint.healthy:
        left = max(
            (s.grace_until - now for s in _states(catalog, entry) if s.grace_until is not None),
            default=0.0,
        )
        return f"stale ({_age(left)} grace left)"
    return "stale (grace over)"


def _states(catalog: Catalog, entry: CatalogEntry) -> list[SourceState]:
    return [s for s in (catalog.source(n) for n in entry.sources) if s is not None]


def _source_line(state: SourceState, now: float) -> str:
    if state.expired:
        return f"expired (stale since {_age(now - (state.stale_since or now))} ago: {state.reason})"
    if state.stale:
        left = (state.grace_until or now) - now
        return (
            f"stale for {_age(now - (state.stale_since or now))} ({state.reason}); "
            f"{_age(left)} grace left"
        )
    return f"fresh, confirmed {_age(now - state.confirmed_at)} ago"


def catalog_table(catalog: Catalog, now: float) -> str:
    """The human view: one line per endpoint, then one line per source."""
    rows: list[tuple[str, ...]] = [
        ("SERVICE", "ENDPOINT", "PROTO", "HEALTH", "WEIGHT", "SOURCES", "AGE", "FRESHNESS")
    ]
    for service in catalog.service_names():
        for entry in catalog.endpoints(service):
            ep = entry.endpoint
            rows.append(
                (
                    str(service),
                    _hostport(ep.address, ep.port),
                    ep.protocol,
                    "healthy" if ep.healthy else "unhealthy",
                    str(ep.weight),
                    ",".join(entry.sources),
                    _age(now - catalog.confirmed_at(entry)),
                    _freshness(catalog, entry, now),
                )
            )
    lines = [
        f"catalog version {catalog.version}: {len(catalog)} endpoints in "
        f"{len(catalog.services)} services from {len(catalog.sources)} sources",
        "",
        *_aligned(rows),
        "",
    ]
    sources: list[tuple[str, ...]] = [("SOURCE", "VERSION", "STATE")]
    for name in sorted(catalog.sources.keys()):
        state = catalog.sources[name]
        sources.append((name, state.version or "-", _source_line(state, now)))
    lines += _aligned(sources)
    return "\n".join(lines)


def _secs(seconds: float) -> float:
    return round(max(0.0, seconds), 3)


def _aligned(rows: list[tuple[str, ...]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


def catalog_json(catalog: Catalog, now: float) -> dict[str, Any]:
    """The machine view (stable keys; times as ages in seconds relative to ``now``)."""
    return {**catalog_answer(catalog, now), "endpoints": list(catalog_rows(catalog, now))}


def catalog_answer(catalog: Catalog, now: float) -> dict[str, Any]:
    """:func:`catalog_json` for the admin server: the endpoints as :class:`Rows`, built while
    they are encoded, a slice per loop step (a 100k-endpoint catalog is seconds of work and
    ~300 MB of row dicts if built at once).  ``catalog`` is an immutable snapshot."""
    sources = [
        {
            "name": s.name,
            "version": s.version,
            "stale": s.stale,
            "expired": s.expired,
            "reason": s.reason,
            "confirmed_age_s": _secs(now - s.confirmed_at),
            "grace_left_s": None if s.grace_until is None else _secs(s.grace_until - now),
        }
        for s in (catalog.sources[n] for n in sorted(catalog.sources.keys()))
    ]
    endpoints = Rows(catalog_rows(catalog, now))
    return {"version": catalog.version, "endpoints": endpoints, "sources": sources}


def catalog_rows(catalog: Catalog, now: float) -> Iterator[dict[str, Any]]:
    """One row per endpoint, by service."""
    for service in catalog.service_names():
        for entry in catalog.endpoints(service):
            ep = entry.endpoint
            yield {
                "service": ep.service.name,
                "namespace": ep.service.namespace,
                "address": ep.address,
                "port": ep.port,
                "protocol": ep.protocol,
                "healthy": ep.healthy,
                "weight": ep.weight,
                "spiffe_id": None if ep.spiffe_id is None else str(ep.spiffe_id),
                "locality": ep.locality,
                "metadata": dict(ep.metadata),
                "sources": [
                    {
                        "source": p.source,
                        "version": p.version,
                        "age_s": _secs(now - p.confirmed_at),
                    }
                    for p in catalog.provenance(entry)
                ],
                "age_s": _secs(now - catalog.confirmed_at(entry)),
                "stale": catalog.is_stale(entry),
                "routable": catalog.is_routable(entry, now),
                "ejected": catalog.ejection(entry),
            }
