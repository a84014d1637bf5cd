"""Worker mode's outlier ejections: each worker's report, the supervisor's fold, and the
effective catalog (``/catalog``, the export to peers) that shows their union."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import immutables
import trio

from discovery.model import Endpoint
from discovery.snapshot import Catalog
from discovery.watch import Watch
from gateway.cluster.outlier import EndpointHealth, OutlierPolicy
from gateway.cluster.outlier_detector import (
    Ejections as Ejected,
)
from gateway.cluster.outlier_detector import (
    OutlierDetector,
    merge_ejections,
    serve_effective_catalog,
)
from gateway.commands.catalog import catalog_json
from gateway.consul_gateways.directory import PeerDirectory
from gateway.workers.channel import Channel, channel_from_socket, channel_pair
from gateway.workers.control import EjectionEntry, Ejections, Start
from gateway.workers.ejections import (
    MAX_REMAINING_S,
    REPORT_INTERVAL_S,
    WorkerEjections,
    from_report,
    report,
    report_ejections,
)
from gateway.workers.messages import Hello
from gateway.workers.supervise import Supervisor
from overlay.federation.config import ExportConfig
from overlay.federation.export_feed import PeerExport
from tests.gateway.upstream.upstream_kit import SVC, watch_of

POLICY = OutlierPolicy(consecutive_5xx=2, base_ejection_time=30.0, max_ejected_percent=100)
A = Endpoint(SVC, "127.0.0.1", 8001)
B = Endpoint(SVC, "127.0.0.1", 8002)
C = Endpoint(SVC, "127.0.0.1", 8003)


def ejected(*items: tuple[Endpoint, float, str]) -> Ejected:
    return immutables.Map(
        {
            ep.key: EndpointHealth(ejections=1, ejected_until=until, reason=why)
            for ep, until, why in items
        }
    )


def entry(ep: Endpoint, remaining: float, reason: str) -> EjectionEntry:
    k = ep.key
    return (k.service.name, k.service.namespace, k.address, k.port, remaining, reason)


def rows(catalog: Catalog, now: float) -> dict[int, dict[str, object]]:
    return {row["port"]: row for row in catalog_json(catalog, now)["endpoints"]}


# -- the pure parts ---------------------------------------------------------------------------


def test_a_report_carries_remaining_times_that_the_supervisor_puts_on_its_own_clock() -> None:
    # The worker's clock reads 1000 where the supervisor's reads 5: only durations cross.
    worker = ejected((A, 1030.0, "a: 2 consecutive 5xx"), (B, 999.0, "b: ended"))
    message = report(worker, 1000.0)
    assert message == Ejections((entry(A, 30.0, "a: 2 consecutive 5xx"),), 0)
    at_supervisor = from_report(message, 5.0)
    assert dict(at_supervisor) == {
        A.key: EndpointHealth(ejections=1, ejected_until=35.0, reason="a: 2 consecutive 5xx")
    }


def test_a_report_is_bounded_keeping_the_longest_ejections() -> None:
    worker = ejected((A, 10.0, "a"), (B, 30.0, "b"), (C, 20.0, "c"))
    message = report(worker, 0.0, limit=2)
    assert [e[3] for e in message.entries] == [B.port, C.port] and message.dropped == 1
    # The supervisor reads at most its own limit, and only sane entries.
    bad = Ejections(
        (
            entry(A, float("nan"), "nan"),
            entry(B, -1.0, "ended"),
            entry(C, 1e12, "x" * 10_000),
            ("api", "default", "127.0.0.1", "8004", 1.0, "a port that is no int"),  # type: ignore[arg-type]
            ("too", "short"),  # type: ignore[arg-type],
        )
    )
    got = from_report(bad, 0.0)
    assert list(got) == [C.key]
    assert got[C.key].ejected_until == MAX_REMAINING_S and len(got[C.key].reason) == 256
    assert set(from_report(message, 0.0, limit=1)) == {B.key}


def test_the_union_keeps_the_latest_end_and_drops_a_worker_when_its_channel_ends() -> None:
    book = WorkerEjections()
    one = report(ejected((A, 30.0, "one: a"), (B, 10.0, "one: b")), 0.0)
    two = report(ejected((B, 50.0, "two: b")), 0.0)
    assert dict(book.update((0, 100), one, 0.0)).keys() == {A.key, B.key}
    union = book.update((1, 101), two, 0.0)
    assert union[B.key].reason == "two: b" and union[B.key].ejected_until == 50.0
    assert union[A.key].reason == "one: a"
    # Worker 1 exits: B stays ejected by worker 0 (its own, shorter ejection).
    union = book.drop((1, 101), 1.0)
    assert union[B.key].reason == "one: b" and set(union) == {A.key, B.key}
    # Worker 0 reports that A's ejection was lifted (a reload): only B is left.
    union = book.update((0, 100), report(ejected((B, 10.0, "one: b")), 1.0), 1.0)
    assert set(union) == {B.key}
    # ...until its time is up, with no message at all; then nothing is held.
    assert book.union(10.0) == immutables.Map() and len(book) == 0


def test_a_late_channel_end_of_a_dead_worker_keeps_its_replacements_report() -> None:
    book = WorkerEjections()
    book.update((0, 100), report(ejected((A, 30.0, "old")), 0.0), 0.0)
    book.update((0, 200), report(ejected((B, 30.0, "new")), 0.0), 0.0)
    assert set(book.drop((0, 100), 0.0)) == {B.key}


def test_merge_ejections_keeps_the_ejection_that_ends_last() -> None:
    early, late = ejected((A, 5.0, "early")), ejected((A, 9.0, "late"), (B, 1.0, "b"))
    assert merge_ejections(early, late)[A.key].reason == "late"
    assert merge_ejections(late, early)[A.key].reason == "late"
    assert merge_ejections(early) is early and len(merge_ejections()) == 0


# -- the detector and the effective catalog ---------------------------------------------------


async def test_the_supervisors_catalog_and_export_show_a_workers_ejection_until_it_ends(
    autojump_clock: trio.abc.Clock,
) -> None:
    """The supervisor's own detector saw nothing; a worker's report marks the endpoint in the
    effective catalog (what ``/catalog`` and the peers' exports read), without touching the
    supervisor's own routing; it comes back when no worker ejects it any more."""
    source = watch_of(A, B)
    detector = OutlierDetector(lambda _svc: POLICY)
    effective: Watch[Catalog] = Watch(Catalog())
    export = PeerExport("west", [ExportConfig()])
    book = WorkerEjections()
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_effective_catalog, source, detector.ejections, effective)
        await trio.sleep(0.1)
        export.update(effective.latest, trio.current_time())
        assert export.view[SVC].healthy_count == 2

        now = trio.current_time()
        why = "outlier: 2 consecutive 5xx responses; ejected for 30s (ejection 1)"
        for worker in ((0, 100), (1, 101)):
            detector.set_reported(book.update(worker, report(ejected((A, 30.0, why)), 0.0), now))
        await trio.sleep(0.1)
        view = rows(effective.latest, trio.current_time())
        assert view[8001]["routable"] is False and view[8001]["ejected"] == why
        assert view[8002]["routable"] is True
        export.update(effective.latest, trio.current_time())
        assert export.view[SVC].healthy_count == 1 and export.view[SVC].total_count == 2
        # Reported ejections are shown, never routed on here.
        assert detector.routable(SVC, (A, B)) == (A, B)

        # Worker 0 exits: worker 1 still ejects A.
        detector.set_reported(book.drop((0, 100), trio.current_time()))
        await trio.sleep(0.1)
        assert rows(effective.latest, trio.current_time())[8001]["routable"] is False
        # Worker 1's detector released it (its report is now empty): A is back.
        detector.set_reported(book.update((1, 101), report(ejected(), 0.0), trio.current_time()))
        await trio.sleep(0.1)
        assert all(r["routable"] for r in rows(effective.latest, trio.current_time()).values())

        # An ejection the supervisor was told of ends by itself when its time is up.
        detector.set_reported(
            book.update((1, 101), report(ejected((B, 20.0, why)), 0.0), trio.current_time())
        )
        await trio.sleep(0.1)
        assert rows(effective.latest, trio.current_time())[8002]["routable"] is False
        await trio.sleep(20)
        assert all(r["routable"] for r in rows(effective.latest, trio.current_time()).values())
        nursery.cancel_scope.cancel()


async def test_own_ejections_and_reported_ones_show_together(
    autojump_clock: trio.abc.Clock,
) -> None:
    detector = OutlierDetector(lambda _svc: POLICY)
    detector.set_reported(ejected((B, trio.current_time() + 30.0, "worker: b")))
    for _ in range(2):
        detector.record(A, "5xx", service_size=3)
    held = detector.ejections.latest
    assert set(held) == {A.key, B.key} and held[B.key].reason == "worker: b"
    assert detector.routable(SVC, (A, B, C)) == (B, C)  # its own ejection only
    detector.set_reported(immutables.Map())
    assert set(detector.ejections.latest) == {A.key}


# -- the worker's reporter ---------------------------------------------------------------------


async def test_the_reporter_sends_each_change_coalescing_a_burst(
    autojump_clock: trio.abc.Clock,
) -> None:
    detector = OutlierDetector(lambda _svc: POLICY)
    sent: list[Ejections] = []

    async def send(message: object) -> None:
        assert isinstance(message, Ejections)
        sent.append(message)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(report_ejections, send, detector.ejections)
        await trio.sleep(1)
        assert sent == []  # nothing ejected: nothing to say
        for _ in range(2):
            detector.record(A, "5xx", service_size=3)
        await trio.sleep(0.01)
        assert [sorted(e[3] for e in m.entries) for m in sent] == [[8001]]
        # A burst within the interval: one more report, with both.
        for ep in (B, C):
            for _ in range(2):
                detector.record(ep, "5xx", service_size=3)
        await trio.sleep(REPORT_INTERVAL_S * 4)
        assert [sorted(e[3] for e in m.entries) for m in sent] == [
            [8001],
            [8001, 8002, 8003],
        ]
        assert 29.0 < sent[-1].entries[0][4] <= 30.0
        # The ejections end; the next look at the service releases them: an empty report.
        await trio.sleep(30)
        assert detector.routable(SVC, (A, B, C)) == (A, B, C)
        await trio.sleep(REPORT_INTERVAL_S * 4)
        assert sent[-1] == Ejections((), 0) and len(sent) == 3
        nursery.cancel_scope.cancel()


# -- the supervisor's channel, over a real socketpair -----------------------------------------


async def fake_worker(channel: Channel, pid: int, eject: Ejected) -> None:
    """Hello, take the start, report ``eject`` with the real reporter, then wait to be cut."""
    await channel.send(Hello(index=0, pid=pid))
    assert isinstance(await channel.receive(), Start)
    reported: Watch[Ejected] = Watch(immutables.Map())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(report_ejections, channel.send, reported)
        reported.publish(eject)
        await trio.sleep_forever()


async def test_the_supervisor_marks_a_workers_report_and_forgets_it_when_its_channel_ends() -> None:
    detector = OutlierDetector(lambda _svc: POLICY)
    sup = Supervisor(count=1, config_path=Path("unused.toml"), text="")
    sup.gw = SimpleNamespace(outlier=detector, peer_directory=PeerDirectory())
    ours, theirs = channel_pair()
    eject = ejected((A, trio.current_time() + 60.0, "worker 0: a"))
    with trio.fail_after(30):  # a hang guard only
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sup._serve_channel, 0, ours)
            async with trio.open_nursery() as worker:
                worker.start_soon(fake_worker, channel_from_socket(theirs), 4242, eject)
                seen = 0
                while A.key not in detector.ejections.latest:
                    seen, _ = await detector.ejections.wait_newer(seen)
                assert detector.ejections.latest[A.key].reason == "worker 0: a"
                assert 0 in sup.conns
                worker.cancel_scope.cancel()
            theirs.close()  # the worker process is gone: its end of the channel closes
            while A.key in detector.ejections.latest:
                seen, _ = await detector.ejections.wait_newer(seen)
            assert 0 not in sup.conns and len(sup.ejections) == 0
            nursery.cancel_scope.cancel()
