"""A site's metrics from its supervisor and workers: sums, the supervisor's own gauges once,
per-process gauges labelled, and text that prometheus-client's strict parser accepts."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from discovery.model import ServiceName
from discovery.steps import complete
from gateway.http.errors import UnknownAddress
from gateway.http.exchange import CallContext, Request
from gateway.observe.merge import links_with_workers, merge_families, merged_metrics_steps, rule_of
from gateway.observe.metrics import FamilySamples, GaugeFamily, Registry
from gateway.observe.observer import Observer
from gateway.observe.state_gauges import import_gauges, link_gauges
from overlay.federation.import_ import ImportTable

API = ServiceName("api", "default")


@dataclass(frozen=True)
class Report:
    """A worker's report as the merge reads it (the real one: gateway.workers.stats)."""

    index: int
    pid: int
    families: tuple[FamilySamples, ...]
    links: Mapping[str, Any] = field(default_factory=dict)
    in_flight: Mapping[str, int] = field(default_factory=dict)


def observer(now: float = 100.0) -> Observer:
    return Observer(
        local_site="a",
        mesh_domain="isthmus",
        sites=["b"],
        known=lambda s: s == API,
        clock=lambda: now,
    )


def serve(obs: Observer, n: int, *, fail: int = 0) -> None:
    """``n`` real exchanges through ``obs`` (the last ``fail`` of them end in a 404)."""
    ctx = CallContext("a", None, 110.0)
    for i in range(n):
        rec = obs.begin_origin(Request(b"GET", b"http", b"api.default.isthmus", b"/", ()), ctx)
        if i >= n - fail:
            obs.finish(rec, UnknownAddress("nobody knows it"))
        else:
            rec.status = 200
            rec.head_at = obs.clock()
            obs.finish(rec)


def parse(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value; raises on anything malformed."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }


def one_header_per_family(text: str) -> None:
    """One HELP and one TYPE per family, and no series twice."""
    types = re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE)
    helps = re.findall(r"^# HELP (\S+) ", text, re.MULTILINE)
    assert len(types) == len(set(types)) and sorted(types) == sorted(helps)
    series = [line.rpartition(" ")[0] for line in text.splitlines() if not line.startswith("#")]
    assert len(series) == len(set(series))


ORIGIN = (("listener", "other"), ("route", "none"), ("service", "api.default"))


def test_counters_and_histograms_of_real_observers_are_summed() -> None:
    supervisor, w0, w1 = observer(), observer(), observer()
    serve(supervisor, 1)
    serve(w0, 5, fail=2)
    serve(w1, 7)
    reports = [
        Report(1, 201, tuple(w1.registry.export_families())),
        Report(0, 200, tuple(w0.registry.export_families())),
    ]
    text = complete(merged_metrics_steps(supervisor.registry, reports)).body
    one_header_per_family(text)
    found = parse(text)
    ok = (*ORIGIN, ("side", "origin"), ("site", "none"))
    assert found[("isthmus_responses_total", tuple(sorted((*ok, ("code", "2xx")))))] == 11
    assert found[("isthmus_requests_total", tuple(sorted(ok)))] == 13
    assert found[("isthmus_responses_total", tuple(sorted((*ok, ("code", "4xx")))))] == 2
    # The histogram: every process's observations, bucket by bucket, sum and count.
    total = tuple(sorted((*ok, ("le", "+Inf"))))
    assert found[("isthmus_request_duration_seconds_bucket", total)] == 13
    assert found[("isthmus_request_duration_seconds_count", tuple(sorted(ok)))] == 13
    head = tuple(sorted((*ok, ("le", "+Inf"))))  # only the answered ones had a head
    assert found[("isthmus_response_head_seconds_bucket", head)] == 11
    # Per worker: both serve (the supervisor's own request is in the sums only).
    assert found[("isthmus_worker_requests_total", (("worker", "0"),))] == 5
    assert found[("isthmus_worker_requests_total", (("worker", "1"),))] == 7
    assert found[("isthmus_workers_reporting", ())] == 2


def test_with_no_worker_the_text_is_the_registry_s_own() -> None:
    obs = observer()
    serve(obs, 3, fail=1)
    own = obs.registry.render()
    merged = complete(merged_metrics_steps(obs.registry, [])).body
    assert merged.startswith(own.rstrip("\n"))  # then only the per-worker families
    assert "isthmus_workers_reporting 0" in merged


def gauges(*families: GaugeFamily) -> tuple[FamilySamples, ...]:
    return tuple(f.export() for f in families)


STATUS_UP = {"b": {"up": True, "ping_rtt_s": 0.002, "open_streams": 3, "links": [{}]}}
STATUS_DOWN = {"b": {"up": False, "open_streams": 0, "links": []}}


def test_gauges_are_summed_kept_once_or_labelled_by_their_meaning() -> None:
    reg = Registry()
    table = ImportTable(grace=1.0)
    reg.collector(lambda: link_gauges(STATUS_UP))
    reg.collector(lambda: import_gauges(table, 0.0))
    workers = [
        Report(0, 10, gauges(*link_gauges(STATUS_UP), *import_gauges(table, 0.0))),
        Report(1, 11, gauges(*link_gauges(STATUS_DOWN))),
    ]
    text = complete(merged_metrics_steps(reg, workers)).body
    one_header_per_family(text)
    found = parse(text)
    # Amounts held now: the site holds the sum.
    assert found[("isthmus_link_open_streams", (("peer", "b"),))] == 6
    assert found[("isthmus_link_connections", (("peer", "b"),))] == 2
    # Per-process state: one sample per process; worker 1 lost its link to b.
    up = {labels: value for (name, labels), value in found.items() if name == "isthmus_link_up"}
    assert up == {
        (("peer", "b"), ("worker", "supervisor")): 1.0,
        (("peer", "b"), ("worker", "0")): 1.0,
        (("peer", "b"), ("worker", "1")): 0.0,
    }
    # Counts kept by the live state (links established) are summed like counters.
    assert found[("isthmus_link_established_total", (("peer", "b"),))] == 0
    assert rule_of(next(f for f in gauges(*link_gauges(STATUS_UP)) if f.kind == "counter")) == "sum"
    # The rtt of a process that has no link is absent, not zero.
    rtt = [k for k in found if k[0] == "isthmus_link_rtt_seconds"]
    assert sorted(dict(k[1])["worker"] for k in rtt) == ["0", "supervisor"]


def test_the_supervisor_s_own_gauges_come_from_it_alone() -> None:
    own = [FamilySamples("isthmus_import_services", "h", "gauge", ("peer",), ((("b",), (4.0,)),))]
    copy = [FamilySamples("isthmus_import_services", "h", "gauge", ("peer",), ((("b",), (3.0,)),))]
    merged = merge_families(own, [("0", copy), ("1", copy)])
    assert merged == own
    assert merge_families([], [("0", copy)]) == []  # a worker's copy alone is not shown


def test_summed_families_stay_bounded_and_the_rest_is_other() -> None:
    def family(start: int) -> FamilySamples:
        return FamilySamples(
            "isthmus_x_total",
            "X.",
            "counter",
            ("service",),
            tuple(((f"svc-{i}",), (1.0,)) for i in range(start, start + 8)),
        )

    [merged] = merge_families(
        [family(0)], [("0", [family(100)]), ("1", [family(200)])], max_series=10
    )
    values = dict(merged.samples)
    assert len(values) == 10
    assert sum(v[0] for v in values.values()) == 24
    assert values[("other",)] == (24 - 9,)


def test_a_family_of_another_shape_is_never_merged_into_one() -> None:
    hist = FamilySamples("isthmus_s", "S.", "histogram", (), (((), (1.0, 2.0, 0.5)),), (0.1,))
    odd = FamilySamples(
        "isthmus_s", "S.", "histogram", (), (((), (1.0, 1.0, 1.0, 9.0)),), (0.1, 1.0)
    )
    [merged] = merge_families([hist], [("0", [odd]), ("1", [hist])])
    assert merged.samples == (((), (2.0, 4.0, 1.0)),)
    text = "\n".join(merged.lines()) + "\n"
    found = parse(text)
    assert found[("isthmus_s_count", ())] == 6
    assert math.isclose(found[("isthmus_s_sum", ())], 1.0)


def test_links_show_each_worker_s_links_per_peer_site() -> None:
    status = {"b": {"up": True, "links": [{"role": "primary"}]}, "c": {"up": False, "links": []}}
    workers = [
        Report(1, 21, (), links={"b": {"up": False, "last_error": "refused", "links": []}}),
        Report(
            0,
            20,
            (),
            links={
                "b": {"up": True, "replicas_up": 2, "open_streams": 1, "links": [{"role": "x"}]}
            },
        ),
    ]
    out = links_with_workers(status, workers)
    assert out["b"]["links"] == [{"role": "primary"}]  # the supervisor's own rows stay
    assert out["b"]["workers_up"] == 1
    assert [w["worker"] for w in out["b"]["workers"]] == [0, 1]
    assert out["b"]["workers"][0] == {
        "worker": 0,
        "pid": 20,
        "up": True,
        "replicas_up": 2,
        "open_streams": 1,
        "last_error": None,
        "links": [{"role": "x"}],
    }
    assert out["b"]["workers"][1]["last_error"] == "refused"
    assert out["c"]["workers_up"] == 0 and not out["c"]["workers"][0]["up"]


def test_the_per_worker_families_are_documented() -> None:
    text = complete(merged_metrics_steps(Registry(), [Report(0, 1, ())])).body
    names = set(re.findall(r"^# TYPE (\S+) ", text, re.MULTILINE))
    assert names == {
        "isthmus_worker_requests_total",
        "isthmus_worker_in_flight",
        "isthmus_workers_reporting",
    }
    doc = (Path(__file__).resolve().parents[3] / "docs" / "metrics.md").read_text("utf-8")
    documented = set(re.findall(r"^\| `(isthmus_[a-z_]+)` \|", doc, re.MULTILINE))
    assert names <= documented, names - documented


def test_two_reports_at_one_index_and_garbage_still_make_valid_text() -> None:
    up = gauges(*link_gauges(STATUS_UP))
    counted = observer()
    serve(counted, 2)
    fams = (*counted.registry.export_families(), *up)
    replies: list[object] = [Report(0, 7, fams), Report(0, 8, fams), {"not": "a report"}]
    text = complete(merged_metrics_steps(Registry(), replies)).body
    one_header_per_family(text)
    found = parse(text)
    workers = {dict(k[1])["worker"] for k in found if k[0] == "isthmus_link_up"}
    assert workers == {"0/7", "0/8"}
    assert found[("isthmus_workers_reporting", ())] == 2
    assert sum(v for k, v in found.items() if k[0] == "isthmus_requests_total") == 4
