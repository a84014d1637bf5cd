"""The per-link gauges read from ``Peering.status()``: streams, stalls, reconnects, abuse
GOAWAYs, export ack lag and version -- one series per configured peer (bounded labels)."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from gateway.observe.state_gauges import link_gauges

STATUS = {
    "b": {
        "up": True,
        "ping_rtt_s": 0.002,
        "links_established": 3,
        "failed_attempts": 0,
        "open_streams": 4,
        "flow_control_stalls": 7,
        "reconnects": 2,
        "abuse_goaways": 1,
        "export_version": 12,
        "export_acked_version": 11,
        "export_ack_lag_s": 0.25,
        "links": [{"role": "primary"}, {"role": "extra"}],
        "replicas_up": 2,
    },
    "c": {"up": False, "links_established": 0, "export_ack_lag_s": None},
}


def test_link_gauges_cover_streams_stalls_reconnects_abuse_and_ack_lag() -> None:
    text = "\n".join(line for fam in link_gauges(STATUS) for line in fam.lines()) + "\n"
    found = {
        (s.name, s.labels.get("peer")): s.value
        for fam in text_string_to_metric_families(text)
        for s in fam.samples
    }
    assert found[("isthmus_link_open_streams", "b")] == 4
    assert found[("isthmus_link_flow_control_stalls_total", "b")] == 7
    assert found[("isthmus_link_reconnects_total", "b")] == 2
    assert found[("isthmus_link_abuse_goaways_total", "b")] == 1
    assert found[("isthmus_export_ack_lag_seconds", "b")] == 0.25
    assert found[("isthmus_export_version", "b")] == 12
    assert found[("isthmus_link_open_streams", "c")] == 0
    assert found[("isthmus_link_connections", "b")] == 2  # the primary and an extra link
    assert found[("isthmus_link_connections", "c")] == 0
    assert found[("isthmus_link_replicas_up", "b")] == 2  # a site of two gateways
    assert found[("isthmus_link_replicas_up", "c")] == 0
    assert ("isthmus_export_ack_lag_seconds", "c") not in found  # no export runs to c
