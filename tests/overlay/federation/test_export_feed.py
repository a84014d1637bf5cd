"""The sliced export fold equals the one-go fold; snapshots leave in parts of about PART_BYTES."""

from __future__ import annotations

from discovery.catalog import apply, apply_many
from discovery.events import Removed, Resynced, SourceStale, Updated
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from discovery.steps import Steps
from overlay.federation.config import ExportConfig
from overlay.federation.export import PART_BYTES, ExportSession, compute_export
from overlay.federation.export_feed import PeerExport, routable_endpoints
from overlay.federation.protocol import ExportedService, Snapshot, encode_message

POLICY = Policy(order=("a",))
RULES = (ExportConfig(service="*", namespace="*"),)


def endpoint(i: int, healthy: bool = True) -> Endpoint:
    return Endpoint(ServiceName(f"s{i % 40}", "x"), f"10.0.{i >> 8}.{i & 255}", 80, healthy=healthy)


def drive(steps: Steps[object], bound: int) -> tuple[object, int]:
    pauses = 0
    while True:
        try:
            done = next(steps)
        except StopIteration as stop:
            return stop.value, pauses
        assert 1 <= done <= bound
        pauses += 1


def test_sliced_fold_equals_full_recompute() -> None:
    catalog, _ = apply(
        Catalog(),
        Resynced("a", tuple(map(endpoint, range(2000))), "1", 0.0),
        now=0.0,
        policy=POLICY,
    )
    feed = PeerExport("peer", RULES)
    changed, pauses = drive(feed.update_steps(catalog, 0.0, slice_items=50), 50)
    assert changed is None and pauses >= 2000 // 50
    assert feed.view == compute_export(routable_endpoints(catalog, 0.0), RULES, "peer")
    # a change in every service: the incremental path, sliced as well
    events = [Updated("a", endpoint(i, healthy=False), "2", 0.0) for i in range(0, 2000, 7)]
    events += [Removed("a", endpoint(i).key, "2", 0.0) for i in range(3, 2000, 11)]
    catalog, _ = apply_many(catalog, events, now=1.0, policy=POLICY)
    touched, pauses = drive(feed.update_steps(catalog, 1.0, slice_items=50), 50)
    assert touched and pauses >= 2
    assert feed.view == compute_export(routable_endpoints(catalog, 1.0), RULES, "peer")
    # a source's standing changed: everything recomputed (routability depends on it)
    catalog, _ = apply(catalog, SourceStale("a", "down", 2.0), now=2.0, policy=POLICY)
    assert drive(feed.update_steps(catalog, 1e9, slice_items=50), 50)[0] is None
    assert all(s.healthy_count == 0 for s in feed.view.values())


def test_abandoned_fold_keeps_the_previous_view() -> None:
    catalog, _ = apply(
        Catalog(), Resynced("a", tuple(map(endpoint, range(500))), "1", 0.0), now=0.0, policy=POLICY
    )
    feed = PeerExport("peer", RULES)
    steps = feed.update_steps(catalog, 0.0, slice_items=10)
    next(steps)
    steps.close()  # cancelled half-way
    assert len(feed.view) == 0
    assert feed.update(catalog, 0.0) is None and len(feed.view) == 40


def test_snapshot_parts_are_about_part_bytes() -> None:
    """A snapshot far below the frame limit still leaves in parts of ~PART_BYTES, so that the
    importer decodes and applies it in short steps."""
    ids = tuple(f"spiffe://x.test/ns/x/sa/{'a' * 40}{j}" for j in range(20))
    view = {
        ServiceName(f"s{i}", "x"): ExportedService(
            ServiceName(f"s{i}", "x"),
            ("http1",),
            1,
            1,
            1,
            tuple(sorted(ids)),  # type: ignore[arg-type]
        )
        for i in range(2000)
    }
    session = ExportSession("east", "ep1")
    session.set_view(view)
    parts = []
    while (msg := session.next_message(0.0)) is not None:
        assert isinstance(msg, Snapshot)
        parts.append(msg)
    sizes = [len(encode_message(p)) for p in parts]
    assert sum(len(p.services) for p in parts) == 2000
    assert len(parts) >= 2 and max(sizes) <= PART_BYTES + 4096, sizes
