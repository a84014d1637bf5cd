"""ExportSession -> wire -> ImportSession: convergence, pipelining, loss, resync, splitting."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping

import immutables
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.model import Endpoint, ServiceName
from overlay.federation.config import ExportConfig
from overlay.federation.export import EMPTY_VIEW, ExportSession, compute_export, update_export
from overlay.federation.import_ import ImportSession
from overlay.federation.protocol import (
    Ack,
    Delta,
    ExportedService,
    FederationProtocolError,
    FrameDecoder,
    Message,
    Nack,
    Snapshot,
    encode_message,
)

from .strategies import NAMES, svc, views

View = Mapping[ServiceName, ExportedService]


def wire(msg: Message, limit: int = 4 * 1024 * 1024) -> Message:
    """Send ``msg`` through the real codec."""
    (out,) = FrameDecoder(max_message_bytes=limit).feed(
        encode_message(msg, max_message_bytes=limit)
    )
    return out


class Link:
    """Two in-order queues between one exporter and one importer; lets tests drop deltas."""

    def __init__(self, exporter: ExportSession, importer: ImportSession) -> None:
        self.exporter, self.importer = exporter, importer
        self.forward: deque[Message] = deque()
        self.backward: deque[Message] = deque()
        self.now = 0.0

    def send(self) -> bool:
        msg = self.exporter.next_message(self.now)
        if msg is None:
            return False
        self.forward.append(wire(msg))
        return True

    def deliver(self, drop: bool = False) -> None:
        msg = self.forward.popleft()
        if drop and isinstance(msg, Delta):
            return
        result = self.importer.receive(msg)
        if result.reply is not None:
            self.backward.append(wire(result.reply))

    def reply(self) -> None:
        self.exporter.receive(self.backward.popleft())

    def settle(self) -> None:
        """Run to quiescence (bounded); an ack that never comes triggers a resync."""
        for _ in range(200):
            self.now += 1
            moved = False
            while self.send():
                moved = True
            while self.forward:
                self.deliver()
                moved = True
            while self.backward:
                self.reply()
                moved = True
            if not moved:
                if self.exporter.in_sync:
                    return
                # The owner's ack deadline: the oldest batch was lost.
                assert self.exporter.oldest_unacked_at() is not None
                self.exporter.resync()
        raise AssertionError("did not converge")


def pair(window: int = 4, limit: int = 4 * 1024 * 1024) -> Link:
    return Link(
        ExportSession("east", "ep1", window=window, max_message_bytes=limit),
        ImportSession("east"),
    )


@settings(max_examples=150, deadline=None)
@given(st.data(), st.integers(1, 4))
def test_any_schedule_with_lost_deltas_converges(data: st.DataObject, window: int) -> None:
    link = pair(window)
    last: View = EMPTY_VIEW
    steps = data.draw(
        st.lists(st.sampled_from(["view", "send", "deliver", "drop", "reply"]), max_size=40)
    )
    for step in steps:
        if step == "view":
            last = data.draw(views())
            link.exporter.set_view(last)
        elif step == "send":
            link.send()
        elif step in ("deliver", "drop") and link.forward:
            link.deliver(drop=step == "drop")
        elif step == "reply" and link.backward:
            link.reply()
    link.settle()
    assert dict(link.importer.services) == dict(last)
    assert link.importer.synced


@settings(max_examples=50, deadline=None)
@given(st.lists(views(), min_size=1, max_size=10))
def test_snapshot_then_deltas_reproduce_every_view(seq: list[View]) -> None:
    link = pair()
    for view in seq:
        link.exporter.set_view(view)
        link.settle()
        assert dict(link.importer.services) == dict(view)
    stats = link.exporter.statistics()
    assert stats.snapshots_sent == 1
    assert stats.nacks_received == 0


def test_first_message_is_a_snapshot_even_when_empty() -> None:
    link = pair()
    msg = link.exporter.next_message(0.0)
    assert isinstance(msg, Snapshot) and msg.services == () and msg.final
    assert link.exporter.next_message(0.0) is None  # nothing new to say


def test_lost_delta_is_nacked_and_resynced_with_a_snapshot() -> None:
    link = pair()
    link.exporter.set_view(immutables.Map({NAMES[0]: svc("api", "a")}))
    link.settle()
    link.exporter.set_view(immutables.Map({NAMES[0]: svc("api", "a", capacity=2)}))
    assert link.send()
    link.deliver(drop=True)
    link.exporter.set_view(immutables.Map({NAMES[0]: svc("api", "a", capacity=3)}))
    assert link.send()
    link.deliver()
    (reply,) = link.backward
    assert isinstance(reply, Nack) and "base version" in reply.reason
    link.reply()
    msg = link.exporter.next_message(0.0)
    assert isinstance(msg, Snapshot)
    link.forward.append(msg)
    link.settle()
    assert link.importer.services[NAMES[0]].capacity == 3
    assert link.exporter.statistics().nacks_received == 1
    assert "base version" in (link.exporter.statistics().last_nack_reason or "")


def test_changes_are_coalesced_while_the_window_is_full() -> None:
    link = pair(window=1)
    link.exporter.set_view(EMPTY_VIEW)
    assert link.send()  # snapshot in flight
    for cap in range(1, 6):
        link.exporter.set_view(immutables.Map({NAMES[0]: svc("api", "a", capacity=cap)}))
        assert not link.send()  # window full
    link.deliver()
    link.reply()
    msg = link.exporter.next_message(1.0)
    assert isinstance(msg, Delta)
    assert [s.capacity for s in msg.upserts] == [5]


def test_window_bounds_unacknowledged_batches() -> None:
    link = pair(window=2)
    for cap in range(1, 5):
        link.exporter.set_view(immutables.Map({NAMES[0]: svc("api", "a", capacity=cap)}))
        link.send()
    assert link.exporter.statistics().in_flight == 2
    assert link.exporter.oldest_unacked_at() == 0.0


def test_bad_replies_are_protocol_errors() -> None:
    exporter = ExportSession("east", "ep1")
    exporter.next_message(0.0)
    with pytest.raises(FederationProtocolError, match="epoch"):
        exporter.receive(Ack("other", 1))
    with pytest.raises(FederationProtocolError, match="not in flight"):
        exporter.receive(Ack("ep1", 7))
    exporter.receive(Ack("ep1", 1))
    with pytest.raises(FederationProtocolError, match="not in flight"):
        exporter.receive(Ack("ep1", 1))  # duplicate
    with pytest.raises(FederationProtocolError):
        exporter.receive(Snapshot("east", "ep1", 1, ()))


def test_nacked_snapshot_is_fatal_not_a_loop() -> None:
    exporter = ExportSession("east", "ep1")
    exporter.next_message(0.0)
    with pytest.raises(FederationProtocolError, match="snapshot"):
        exporter.receive(Nack("ep1", 1, "no"))


def test_replies_from_before_a_resync_are_ignored() -> None:
    exporter = ExportSession("east", "ep1")
    exporter.next_message(0.0)
    exporter.receive(Ack("ep1", 1))
    exporter.set_view(immutables.Map({NAMES[0]: svc("api", "a")}))
    assert isinstance(exporter.next_message(0.0), Delta)  # v2
    exporter.resync()
    snap = exporter.next_message(0.0)
    assert isinstance(snap, Snapshot) and snap.version == 3
    exporter.receive(Ack("ep1", 2))  # stale: ignored
    exporter.receive(Nack("ep1", 2, "late"))  # stale: ignored
    exporter.receive(Ack("ep1", 3))
    assert exporter.in_sync


def test_big_snapshot_and_delta_are_split_and_applied_atomically() -> None:
    limit = 4096
    link = pair(limit=limit)
    view = immutables.Map({s.service: s for s in (svc(f"s{i}") for i in range(200))})
    link.exporter.set_view(view)
    parts = []
    while (msg := link.exporter.next_message(0.0)) is not None:
        parts.append(wire(msg, limit))  # each part fits the limit
    assert len(parts) > 2
    assert all(isinstance(p, Snapshot) for p in parts)
    assert [p.final for p in parts if isinstance(p, Snapshot)].count(True) == 1
    for p in parts[:-1]:
        assert link.importer.receive(p).reply is None
        assert dict(link.importer.services) == {}  # nothing until the final part
    result = link.importer.receive(parts[-1])
    assert isinstance(result.reply, Ack)
    link.exporter.receive(result.reply)
    assert dict(link.importer.services) == dict(view)
    bigger = immutables.Map({s.service: s for s in (svc(f"s{i}", capacity=2) for i in range(200))})
    link.exporter.set_view(bigger)
    deltas = []
    while (msg := link.exporter.next_message(1.0)) is not None:
        deltas.append(wire(msg, limit))
    assert len(deltas) > 2 and all(isinstance(d, Delta) for d in deltas)
    link.forward.extend(deltas)
    link.settle()
    assert dict(link.importer.services) == dict(bigger)


def test_importer_rejects_out_of_protocol_input() -> None:
    importer = ImportSession("east")
    with pytest.raises(FederationProtocolError, match="west"):
        importer.receive(Snapshot("west", "e", 1, ()))
    with pytest.raises(FederationProtocolError):
        importer.receive(Ack("e", 1))
    importer.receive(Snapshot("east", "e", 1, (svc("a"),), final=False))
    with pytest.raises(FederationProtocolError, match="split snapshot"):
        importer.receive(Delta("east", "e", 1, 2, (), ()))
    small = ImportSession("east", max_services=2)
    with pytest.raises(FederationProtocolError, match="exceeds"):
        small.receive(Snapshot("east", "e", 1, (svc("a"), svc("b"), svc("c"))))
    small = ImportSession("east", max_services=2)
    small.receive(Snapshot("east", "e", 1, (svc("a"), svc("b"))))
    with pytest.raises(FederationProtocolError, match="exceeds"):
        small.receive(Delta("east", "e", 1, 2, (svc("c"),), ()))


def test_importer_nacks_what_it_cannot_apply_and_keeps_its_state() -> None:
    importer = ImportSession("east")
    r = importer.receive(Delta("east", "e", 1, 2, (svc("a"),), ()))
    assert isinstance(r.reply, Nack) and "snapshot" in r.reply.reason
    importer.receive(Snapshot("east", "e", 1, (svc("a"),)))
    r = importer.receive(Delta("east", "e", 1, 2, (svc("b"),), (ServiceName("zzz", "default"),)))
    assert isinstance(r.reply, Nack) and r.update is None
    assert set(importer.services) == {ServiceName("a", "default")}
    # once unsynced, even a delta with the right base is refused until a snapshot
    r = importer.receive(Delta("east", "e", 1, 2, (svc("b"),), ()))
    assert isinstance(r.reply, Nack)
    r = importer.receive(Snapshot("east", "e2", 5, (svc("b"),)))
    assert r.reply == Ack("e2", 5)
    r = importer.receive(Delta("east", "e", 5, 6, (), ()))
    assert isinstance(r.reply, Nack) and "epoch" in r.reply.reason


def _endpoints(n_services: int, per_service: int, bump: int = -1) -> list[Endpoint]:
    return [
        Endpoint(
            ServiceName(f"svc{s}", "default"),
            f"10.{s // 250}.{s % 250}.{e}",
            8080,
            weight=2 if s < bump else 1,
        )
        for s in range(n_services)
        for e in range(per_service)
    ]


def test_delta_for_a_one_percent_change_is_one_percent_of_a_snapshot() -> None:
    rules = [ExportConfig()]
    eps = _endpoints(2000, 5)  # 10k endpoints
    view = compute_export(eps, rules, "west")
    exporter = ExportSession("east", "ep1")
    exporter.set_view(view)
    snap = exporter.next_message(0.0)
    assert snap is not None
    exporter.receive(Ack("ep1", 1))
    changed = {ServiceName(f"svc{s}", "default"): [] for s in range(20)}  # 1%: withdrawn
    new_view, touched = update_export(view, changed, rules, "west")
    assert len(touched) == 20
    exporter.set_view(new_view, touched)
    delta = exporter.next_message(1.0)
    assert isinstance(delta, Delta) and len(delta.removals) == 20 and not delta.upserts
    assert len(encode_message(delta)) * 50 < len(encode_message(snap))
