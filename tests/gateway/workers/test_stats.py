"""A worker's report from a real gateway's parts, across the real control channel, merged by
the supervisor; and the supervisor's book keeping the site's counters monotonic when a worker
is replaced."""

from __future__ import annotations

import pickle
import socket
from pathlib import Path

import trio
from prometheus_client.parser import text_string_to_metric_families

from discovery.steps import complete
from gateway.app import Gateway, build_gateway, load_identity
from gateway.config.load import load_text
from gateway.http.exchange import CallContext, Request
from gateway.observe.merge import links_with_workers, merge_families, merged_metrics_steps
from gateway.observe.metrics import FamilySamples
from gateway.workers.channel import Channel, channel_from_socket, channel_pair
from gateway.workers.messages import StatsReply, StatsRequest
from gateway.workers.stats import StatsBook, WorkerStats, worker_stats, workers_json
from gateway.workers.stats_poll import StatsPoll
from tests.gateway.config.config_kit import GOOD, write_identity

REQUESTS = "isthmus_requests_total"


async def gateway(tmp_path: Path) -> Gateway:
    if not (tmp_path / "svid.pem").exists():
        write_identity(tmp_path)
    config = load_text(GOOD, base_dir=tmp_path)
    identity, _bundles = await load_identity(config)
    return build_gateway(config, identity)


def serve(gw: Gateway, n: int) -> None:
    """``n`` real exchanges counted by the gateway's observer."""
    obs = gw.observer
    assert obs is not None
    ctx = CallContext("aws-east", None, 1e9)
    for _ in range(n):
        rec = obs.begin_origin(Request(b"GET", b"http", b"api.payments.isthmus", b"/", ()), ctx)
        rec.status = 200
        obs.finish(rec)


def over_a_socket(stats: WorkerStats) -> WorkerStats:
    """``stats`` as the supervisor receives it: pickled through a real socket pair."""
    left, right = socket.socketpair()
    with left, right:
        data = pickle.dumps(stats)
        left.sendall(data)
        got = b""
        while len(got) < len(data):
            got += right.recv(1 << 16)
    out = pickle.loads(got)
    assert isinstance(out, WorkerStats)
    return out


async def test_reports_cross_the_real_control_channel(tmp_path: Path) -> None:
    """Two workers' parts answer ``StatsRequest`` on their end of a real socketpair; the
    supervisor's poll gathers both and merges them."""
    workers = [await gateway(tmp_path) for _ in range(2)]
    serve(workers[0], 2)
    serve(workers[1], 5)
    poll = StatsPoll(StatsBook(), StatsRequest, timeout_s=5.0)
    async with trio.open_nursery() as nursery:
        sends = {}
        for index, gw in enumerate(workers):
            ours, theirs = channel_pair()
            sends[index] = ours.send
            worker_end = channel_from_socket(theirs)

            async def answer(gw: Gateway = gw, end: Channel = worker_end, i: int = index) -> None:
                while True:
                    message = await end.receive()
                    assert isinstance(message, StatsRequest)
                    stats = worker_stats(gw, index=i, snapshot_version=7)
                    await end.send(StatsReply(message.request_id, stats))

            async def read(ours: Channel = ours, i: int = index) -> None:
                while True:
                    reply = await ours.receive()
                    assert isinstance(reply, StatsReply)
                    poll.answer(i, reply.request_id, reply.stats)

            nursery.start_soon(answer)
            nursery.start_soon(read)
        with trio.fail_after(30):  # hang guard only
            got = await poll.poll(sends)
        nursery.cancel_scope.cancel()
    assert [(s.index, requests(s.families), s.snapshot_version) for s in got] == [
        (0, 2, 7),
        (1, 5, 7),
    ]
    assert requests(tuple(merge_families([], [(str(s.index), s.families) for s in got]))) == 7


def requests(families: tuple[FamilySamples, ...]) -> float:
    return sum(v[0] for f in families if f.name == REQUESTS for _l, v in f.samples)


async def test_a_worker_s_report_holds_its_counts_links_and_own_gauges(tmp_path: Path) -> None:
    gw = await gateway(tmp_path)
    serve(gw, 3)
    stats = over_a_socket(worker_stats(gw, index=1, snapshot_version=(7, 3)))
    assert stats.index == 1 and stats.snapshot_version == (7, 3)
    assert requests(stats.families) == 3
    names = {f.name for f in stats.families}
    assert {
        "isthmus_link_up",
        "isthmus_buffer_budget_bytes",
        "isthmus_route_mirrors_in_flight",
    } <= (names)
    # The supervisor's state is not recomputed by a worker (it holds copies of it).
    assert not {n for n in names if n.startswith(("isthmus_catalog_", "isthmus_import_"))}
    assert set(stats.links) == {"gcp-west"} and stats.links["gcp-west"]["up"] is False
    assert stats.in_flight == {
        "link_streams": 0,
        "mirrors": 0,
        "upstream_h2": 0,
        "upstream_idle_h1": 0,
    }
    assert workers_json([stats])["1"]["requests"] == 3


async def test_the_supervisor_shows_the_site_s_sums(tmp_path: Path) -> None:
    supervisor, w0, w1 = [await gateway(tmp_path) for _ in range(3)]
    serve(w0, 4)
    serve(w1, 6)
    reports = [over_a_socket(worker_stats(w, index=i)) for i, w in enumerate((w0, w1))]
    assert supervisor.observer is not None
    text = complete(merged_metrics_steps(supervisor.observer.registry, reports)).body
    families = {f.name: f for f in text_string_to_metric_families(text)}
    total = sum(s.value for s in families["isthmus_requests"].samples)
    assert total == 10
    up = {s.labels["worker"]: s.value for s in families["isthmus_link_up"].samples}
    assert up == {"supervisor": 0.0, "0": 0.0, "1": 0.0}
    [expiry] = families["isthmus_svid_expiry_seconds"].samples  # once: the supervisor's
    assert "worker" not in expiry.labels and expiry.value > 0
    links = links_with_workers(supervisor.peering.status(), reports)
    assert [w["worker"] for w in links["gcp-west"]["workers"]] == [0, 1]


def report(index: int, pid: int, count: float) -> WorkerStats:
    fam = FamilySamples(REQUESTS, "R.", "counter", ("service",), ((("api",), (count,)),))
    gauge = FamilySamples(
        "isthmus_link_open_streams", "S.", "gauge", ("peer",), ((("b",), (9.0,)),)
    )
    return WorkerStats(index=index, pid=pid, families=(fam, gauge))


def site_total(book: StatsBook) -> float:
    merged = merge_families(
        [], [(str(s.index), s.families) for s in book.current()], retired=book.retired
    )
    return requests(tuple(merged))


def test_a_replaced_worker_s_counts_stay_in_the_site_s_sum() -> None:
    book = StatsBook()
    book.record(report(0, 100, 5))
    book.record(report(1, 101, 7))
    assert site_total(book) == 12
    book.record(report(0, 100, 6))  # the same process again: its count grew
    assert site_total(book) == 13
    book.record(report(0, 200, 1))  # worker 0 crashed; its successor has served one
    assert site_total(book) == 14
    book.record(report(0, 300, 0))  # and again
    assert site_total(book) == 14
    assert [f.name for f in book.retired] == [REQUESTS]  # gauges of the dead are not kept
    book.forget(1)
    assert site_total(book) == 14 and [s.index for s in book.current()] == [0]
