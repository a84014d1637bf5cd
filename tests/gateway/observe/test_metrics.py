"""The metrics registry and its exposition, checked with prometheus-client's strict parser."""

from __future__ import annotations

import math

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.observe.metrics import OTHER, GaugeFamily, Registry


def parse(text: str) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Family name -> (sample name, labels, value); raises on anything malformed."""
    return {
        f.name: [(s.name, dict(s.labels), s.value) for s in f.samples]
        for f in text_string_to_metric_families(text)
    }


def test_counter_histogram_and_gauge_parse_strictly() -> None:
    reg = Registry()
    requests = reg.counter("isthmus_requests_total", "Requests.", ("service", "site"))
    latency = reg.histogram("isthmus_seconds", "Latency.", ("service",), buckets=(0.1, 1.0))
    requests.inc(("api.default", "b"))
    requests.inc(("api.default", "b"), 2)
    requests.inc(('we"ird\\name\n', "a"))
    latency.observe(("api.default",), 0.05)
    latency.observe(("api.default",), 0.5)
    latency.observe(("api.default",), 7.0)
    reg.collector(
        lambda: [GaugeFamily("isthmus_link_up", "Up.\nmultiline", ("peer",), ((("b",), 1.0),))]
    )
    families = parse(reg.render())
    assert ("isthmus_requests_total", {"service": "api.default", "site": "b"}, 3.0) in families[
        "isthmus_requests"
    ]
    assert ("isthmus_requests_total", {"service": 'we"ird\\name\n', "site": "a"}, 1.0) in (
        families["isthmus_requests"]
    )
    buckets = {s[1]["le"]: s[2] for s in families["isthmus_seconds"] if s[0].endswith("_bucket")}
    assert buckets == {"0.1": 1.0, "1.0": 2.0, "+Inf": 3.0}
    count = [s[2] for s in families["isthmus_seconds"] if s[0] == "isthmus_seconds_count"]
    total = [s[2] for s in families["isthmus_seconds"] if s[0] == "isthmus_seconds_sum"]
    assert count == [3.0] and math.isclose(total[0], 7.55)
    assert families["isthmus_link_up"] == [("isthmus_link_up", {"peer": "b"}, 1.0)]


def test_label_sets_are_capped_and_the_rest_is_grouped_as_other() -> None:
    reg = Registry(max_series=10)
    c = reg.counter("isthmus_x_total", "X.", ("service",))
    for i in range(1000):
        c.inc((f"svc-{i}",))
    assert len(c.values) == 10
    assert c.get((OTHER,)) == 1000 - 9
    assert sum(c.values.values()) == 1000
    assert len(parse(reg.render())["isthmus_x"]) == 10


def test_wrong_label_count_and_counter_names_are_refused() -> None:
    reg = Registry(max_series=1)
    c = reg.counter("isthmus_y_total", "Y.", ("a", "b"))
    with pytest.raises(ValueError, match="2 label values"):
        c.inc(("only-one",))
    with pytest.raises(ValueError, match="_total"):
        reg.counter("isthmus_z", "Z.", ())


def test_resolved_cells_and_series_count_into_the_family_and_stay_bounded() -> None:
    reg = Registry(max_series=3)
    c = reg.counter("isthmus_c_total", "C.", ("service",))
    h = reg.histogram("isthmus_h_seconds", "H.", ("service",), buckets=(0.1, 1.0))
    cell = c.cell(("api",))
    cell[0] += 2
    c.inc(("api",))
    assert c.cell(("api",)) is cell and c.get(("api",)) == 3
    series = h.series(("api",))
    series.observe(0.05)
    h.observe(("api",), 5.0)
    assert h.count(("api",)) == 2
    for name in ("b", "c", "d"):  # past max_series: the rest share the "other" cell and row
        c.cell((name,))[0] += 1
        h.series((name,)).observe(0.5)
    assert c.cell(("d",)) is c.cell((OTHER,)) and c.get((OTHER,)) == 2
    assert h.count((OTHER,)) == 2 and len(h.values) == 3
    families = parse(reg.render())
    assert ("isthmus_c_total", {"service": "api"}, 3.0) in families["isthmus_c"]
