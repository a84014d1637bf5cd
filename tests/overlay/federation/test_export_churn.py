"""A churn re-tallies only the changed endpoints, and the result stays the full recompute's.

Counted, not timed: ``consents`` (the export rules, asked once per endpoint tallied) is wrapped
with a counter.  Before the reversible tally, one changed endpoint in each of 40 services made
the fold re-tally all 40 x 50 endpoints -- at 100k endpoints and a 1 % churn per second, as much
work every second as a full recompute.
"""

from __future__ import annotations

import random
from typing import Any

import immutables
import pytest

import overlay.federation.export
from discovery.catalog import apply, apply_many
from discovery.events import Added, Event, Removed, Resynced, Updated
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from foundation.spiffe_id import SpiffeId
from overlay.federation.config import ExportConfig
from overlay.federation.export import compute_export
from overlay.federation.export_feed import PeerExport, routable_endpoints

POLICY = Policy(order=("a",))
RULES = (ExportConfig(service="*", namespace="*", tags=("web",)),)
SERVICES, PER_SERVICE = 40, 50


def endpoint(i: int, *, healthy: bool = True, weight: int = 1, tagged: bool = True) -> Endpoint:
    return Endpoint(
        ServiceName(f"s{i % SERVICES}", "x"),
        f"10.0.{i >> 8}.{i & 255}",
        80,
        protocol="http2" if i % 3 else "http1",
        healthy=healthy,
        weight=weight,
        spiffe_id=SpiffeId.parse(f"spiffe://x.test/sa/s{i % 7}"),
        metadata=(("tags", "web"),) if tagged else (),
    )


def start() -> Catalog:
    everything = tuple(endpoint(i) for i in range(SERVICES * PER_SERVICE))
    return apply(Catalog(), Resynced("a", everything, "1", 0.0), now=0.0, policy=POLICY)[0]


def test_one_change_per_service_tallies_one_endpoint_per_service(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls = [0]
    real = overlay.federation.export.consents

    def counting(*args: Any) -> bool:
        calls[0] += 1
        return real(*args)

    monkeypatch.setattr(overlay.federation.export, "consents", counting)
    catalog = start()
    feed = PeerExport("peer", RULES)
    assert feed.update(catalog, 0.0) is None
    assert calls[0] == SERVICES * PER_SERVICE
    calls[0] = 0
    events = [Updated("a", endpoint(s, weight=9), "2", 1.0) for s in range(SERVICES)]
    catalog, _ = apply_many(catalog, events, now=1.0, policy=POLICY)
    touched = feed.update(catalog, 1.0)
    assert touched is not None and len(touched) == SERVICES
    assert calls[0] == SERVICES
    assert feed.view == compute_export(routable_endpoints(catalog, 1.0), RULES, "peer")


def test_a_random_churn_stays_equal_to_the_full_recompute() -> None:
    rng = random.Random(4)
    catalog = start()
    feed = PeerExport("peer", RULES)
    feed.update(catalog, 0.0)
    live = set(range(SERVICES * PER_SERVICE))
    fresh = SERVICES * PER_SERVICE
    for round_ in range(1, 30):
        events: list[Event] = []
        for i in rng.sample(sorted(live), 25):
            kind = rng.randrange(4)
            if kind == 0:
                events.append(Removed("a", endpoint(i).key, str(round_), 0.0))
                live.discard(i)
            else:  # health, weight, consent (the tag) or protocol-neutral changes
                changed = endpoint(
                    i, healthy=kind != 1, weight=rng.randrange(0, 4), tagged=kind != 2
                )
                events.append(Updated("a", changed, str(round_), 0.0))
        for _ in range(8):
            events.append(Added("a", endpoint(fresh), str(round_), 0.0))
            live.add(fresh)
            fresh += 1
        now = float(round_)
        catalog, _ = apply_many(catalog, events, now=now, policy=POLICY)
        if round_ % 7 == 0:  # the gateway ejects one endpoint, readmits the others
            key = endpoint(rng.choice(sorted(live))).key
            catalog = catalog.with_ejected(immutables.Map({key: "outlier"}))
        feed.update(catalog, now)
        assert feed.view == compute_export(routable_endpoints(catalog, now), RULES, "peer")
