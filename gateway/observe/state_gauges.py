"""Gauges read from the gateway's live state at scrape time (pure functions of that state).

Why at scrape time: links, imports, the catalog and the identity change rarely and already
keep their own state; reading it when Prometheus asks costs the data path nothing.  Labels
are bounded by configuration: peers are configured, sources are configured, trust domains
are the bundles this gateway trusts.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter as Tally
from collections.abc import Iterator, Mapping
from typing import Any

from discovery.snapshot import Catalog
from discovery.steps import SLICE_ITEMS, UNSLICED, Steps, check_slice, complete
from gateway.observe.metrics import GaugeFamily
from overlay.federation.import_ import ImportTable
from overlay.h2.buffer_budget import BufferBudget
from overlay.identity.state import IdentityState

__all__ = [
    "buffer_budget_gauges",
    "catalog_gauges",
    "catalog_gauges_steps",
    "identity_gauges",
    "import_gauges",
    "link_gauges",
]


def link_gauges(status: Mapping[str, Mapping[str, Any]]) -> Iterator[GaugeFamily]:
    """From ``Peering.status()``: per peer, up, RTT, links established, failed attempts."""
    peers = sorted(status)
    yield GaugeFamily(
        "isthmus_link_up",
        "1 if a link to the peer is up (usable for tunnels), else 0.",
        ("peer",),
        tuple(((p,), 1.0 if status[p].get("up") else 0.0) for p in peers),
    )
    yield GaugeFamily(
        "isthmus_link_rtt_seconds",
        "Round-trip time of the link's last answered PING (absent until one was answered).",
        ("peer",),
        tuple(
            ((p,), float(status[p]["ping_rtt_s"]))
            for p in peers
            if status[p].get("ping_rtt_s") is not None
        ),
    )
    yield GaugeFamily(
        "isthmus_link_established_total",
        "Links established to the peer since start (its increase counts reconnects).",
        ("peer",),
        tuple(((p,), float(status[p].get("links_established", 0))) for p in peers),
        kind="counter",
    )
    yield GaugeFamily(
        "isthmus_link_open_streams",
        "Streams open on the peer's links (both directions, both HTTP/2 connections).",
        ("peer",),
        tuple(((p,), float(status[p].get("open_streams", 0))) for p in peers),
    )
    yield GaugeFamily(
        "isthmus_link_replicas_up",
        "Gateways (replicas) of the peer site with a live link; the site is up while one is.",
        ("peer",),
        tuple(((p,), float(status[p].get("replicas_up", 0))) for p in peers),
    )
    yield GaugeFamily(
        "isthmus_link_connections",
        "Links (TCP connections) to the peer: the primary ones and the extra ones of its pool.",
        ("peer",),
        tuple(((p,), float(len(status[p].get("links", ())))) for p in peers),
    )
    yield GaugeFamily(
        "isthmus_link_flow_control_stalls_total",
        "Sends on the peer's links that waited for the peer's HTTP/2 flow-control window.",
        ("peer",),
        tuple(((p,), float(status[p].get("flow_control_stalls", 0))) for p in peers),
        kind="counter",
    )
    yield GaugeFamily(
        "isthmus_link_reconnects_total",
        "Links established to the peer after the first one (each a reconnect).",
        ("peer",),
        tuple(((p,), float(status[p].get("reconnects", 0))) for p in peers),
        kind="counter",
    )
    yield GaugeFamily(
        "isthmus_link_abuse_goaways_total",
        "Links to the peer this gateway closed with GOAWAY ENHANCE_YOUR_CALM (a frame flood).",
        ("peer",),
        tuple(((p,), float(status[p].get("abuse_goaways", 0))) for p in peers),
        kind="counter",
    )
    yield GaugeFamily(
        "isthmus_export_ack_lag_seconds",
        "Age of the oldest export batch the peer has not acknowledged (0: all acknowledged; "
        "absent while no export runs).",
        ("peer",),
        tuple(
            ((p,), float(status[p]["export_ack_lag_s"]))
            for p in peers
            if status[p].get("export_ack_lag_s") is not None
        ),
    )
    yield GaugeFamily(
        "isthmus_export_version",
        "Catalog version last exported to the peer (absent while no export runs).",
        ("peer",),
        tuple(
            ((p,), float(status[p]["export_version"]))
            for p in peers
            if status[p].get("export_version") is not None
        ),
    )
    yield GaugeFamily(
        "isthmus_link_failed_attempts",
        "Consecutive failed attempts to link to the peer (0 once a link is up).",
        ("peer",),
        tuple(((p,), float(status[p].get("failed_attempts", 0))) for p in peers),
    )


def import_gauges(table: ImportTable, now: float) -> Iterator[GaugeFamily]:
    """Per peer: the federation version imported, whether it is stale, and its age."""
    peers = sorted(table.peers.keys())
    yield GaugeFamily(
        "isthmus_import_version",
        "Catalog version last imported from the peer.",
        ("peer",),
        tuple(((p,), float(table.peers[p].version)) for p in peers),
    )
    yield GaugeFamily(
        "isthmus_import_stale",
        "1 if the peer's imports are stale (its link is down, the grace is running).",
        ("peer",),
        tuple(((p,), 1.0 if table.peers[p].stale else 0.0) for p in peers),
    )
    yield GaugeFamily(
        "isthmus_import_age_seconds",
        "Seconds since a live link last confirmed the peer's imports (freshness).",
        ("peer",),
        tuple(((p,), max(0.0, now - table.peers[p].confirmed_at)) for p in peers),
    )
    yield GaugeFamily(
        "isthmus_import_services",
        "Services imported from the peer.",
        ("peer",),
        tuple(((p,), float(len(table.peers[p].services))) for p in peers),
    )


def catalog_gauges(catalog: Catalog, now: float) -> Iterator[GaugeFamily]:
    """Local endpoints by source and state (healthy, unhealthy, stale), and per source its
    staleness and the age of its last full confirmation."""
    return iter(complete(catalog_gauges_steps(catalog, now, slice_rows=UNSLICED)))


def catalog_gauges_steps(
    catalog: Catalog, now: float, *, slice_rows: int = SLICE_ITEMS
) -> Steps[tuple[GaugeFamily, ...]]:
    """:func:`catalog_gauges`, yielding after every ``slice_rows`` endpoints counted (a scrape
    of a 100k-endpoint catalog is ~0.1-0.3 s of CPU: one slice per loop step instead).  Reads
    one snapshot, which nobody mutates between slices."""
    check_slice(slice_rows)
    tally: Tally[tuple[str, str]] = Tally()
    pending = 0
    for entry in catalog.entries():
        if pending >= slice_rows:
            yield pending
            pending = 0
        pending += 1
        state = (
            "stale"
            if catalog.is_stale(entry)
            else ("healthy" if entry.endpoint.healthy else "unhealthy")
        )
        for source in entry.sources:
            tally[(source, state)] += 1
    sources = sorted(catalog.sources.keys())
    samples = [
        ((source, state), float(tally[(source, state)]))
        for source in sources
        for state in ("healthy", "unhealthy", "stale")
    ]
    return (
        GaugeFamily(
            "isthmus_catalog_endpoints",
            "Local endpoints reported by each source, by state.",
            ("source", "state"),
            tuple(samples),
        ),
        GaugeFamily(
            "isthmus_source_stale",
            "1 if the source is stale (its last good snapshot is served), else 0.",
            ("source",),
            tuple(((s,), 1.0 if catalog.sources[s].stale else 0.0) for s in sources),
        ),
        GaugeFamily(
            "isthmus_source_age_seconds",
            "Seconds since the source last confirmed its full view.",
            ("source",),
            tuple(
                ((s,), max(0.0, now - catalog.sources[s].confirmed_at))
                for s in sources
                if catalog.sources[s].confirmed_at
            ),
        ),
    )


def identity_gauges(state: IdentityState, wall: dt.datetime) -> Iterator[GaugeFamily]:
    """Seconds left on this gateway's SVID (negative once expired), by its trust domain."""
    left = (state.svid.leaf.not_valid_after_utc - wall).total_seconds()
    yield GaugeFamily(
        "isthmus_svid_expiry_seconds",
        "Seconds until this gateway's own X509-SVID expires (negative: expired).",
        ("trust_domain",),
        (((state.spiffe_id.trust_domain.name,), left),),
    )


def buffer_budget_gauges(budget: BufferBudget | None) -> Iterator[GaugeFamily]:
    """The gateway-wide budget of tunnel receive windows (``[limits] buffer_budget``)."""
    if budget is None:
        return
    yield GaugeFamily(
        "isthmus_buffer_budget_bytes",
        "Bytes all tunnels' receive windows may hold together ([limits] buffer_budget).",
        (),
        (((), float(budget.limit)),),
    )
    yield GaugeFamily(
        "isthmus_buffer_budget_reserved_bytes",
        "Bytes of receive window promised to peers now, across every link's tunnels.",
        (),
        (((), float(budget.reserved)),),
    )
    yield GaugeFamily(
        "isthmus_buffer_budget_peak_bytes",
        "The most receive window ever promised at once since start.",
        (),
        (((), float(budget.peak)),),
    )
    yield GaugeFamily(
        "isthmus_window_growth_refused_total",
        "Times a tunnel's window stayed small because the buffer budget was spent.",
        (),
        (((), float(budget.growth_refused)),),
        kind="counter",
    )
