"""The observer's decisions: the status an error became, bounded labels, sampling, the line,
and that every metric it can export is documented."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import trio

from discovery.model import ServiceName
from discovery.snapshot import Catalog
from gateway.cluster.outlier_detector import OutlierDetector
from gateway.cluster.outlier_metrics import outlier_gauges
from gateway.config.errors import ConfigInvalid
from gateway.config.load import load_text
from gateway.http.errors import UnknownAddress
from gateway.http.exchange import CallContext, Request
from gateway.http.message import Headers
from gateway.observe import observer as observer_module
from gateway.observe.access_log import AccessLog
from gateway.observe.observer import Observer, sampled
from gateway.observe.state_gauges import catalog_gauges, import_gauges, link_gauges
from gateway.router.route import NoHealthySite
from gateway.routes.mirrors import Mirrors, mirror_gauges
from overlay.federation.import_ import ImportTable
from tests.gateway.config.config_kit import GOOD

ROOT = Path(__file__).resolve().parents[3]
API = ServiceName("api", "default")


def observer(rate: float = 1.0, max_buffer_bytes: int = 1 << 20) -> tuple[Observer, AccessLog]:
    log = AccessLog("-", rate, max_buffer_bytes=max_buffer_bytes)
    obs = Observer(
        local_site="a",
        mesh_domain="isthmus",
        sites=["b"],
        known=lambda s: s == API,
        access_log=log,
        clock=lambda: 100.0,
    )
    return obs, log


def request(authority: bytes, path: bytes = b"/", headers: Headers = ()) -> Request:
    return Request(b"GET", b"http", authority, path, headers)


def test_errors_count_as_the_response_they_became_and_unknown_names_are_other(
    tmp_path: Path,
) -> None:
    obs, log = observer()
    ctx = CallContext("a", None, 110.0)
    for i in range(50):
        rec = obs.begin_origin(request(b"svc-%d.default.isthmus" % i), ctx)
        obs.finish(rec, UnknownAddress("no site knows it"))
    rec = obs.begin_origin(request(b"api.default.isthmus"), ctx)
    rec.tried.append(("b", "link down"))
    obs.finish(rec, NoHealthySite("every site failed"))
    labels = ("origin", "other", "other", "none", "none", "4xx")
    assert obs.responses.get(labels) == 50
    assert obs.responses.get(("origin", "other", "api.default", "none", "none", "5xx")) == 1
    assert obs.failovers.get(("origin", "other", "api.default", "b", "none")) == 1
    assert {k[2] for k in obs.requests.values} == {"other", "api.default"}
    lines = [json.loads(x) for x in log.drain()]
    assert [x["status"] for x in lines] == [404] * 50 + [503]
    assert lines[0]["service"] == "svc-0.default" and lines[0]["error"] == "UnknownAddress"
    assert lines[-1]["tried"] == [{"site": "b", "skipped": "link down"}]


def test_no_query_and_no_credential_reaches_a_line(tmp_path: Path) -> None:
    obs, log = observer()
    headers = ((b"authorization", b"Bearer s3cr3t-1"), (b"cookie", b"sid=s3cr3t-2"))
    rec = obs.begin_origin(
        request(b"api.default.isthmus", b"/x?token=s3cr3t-3", headers), CallContext("a", None, 1)
    )
    rec.tried.append(("b", "EndpointConnectFailed: x-auth-token: s3cr3t-4"))
    obs.finish(rec)
    [text] = log.drain()
    assert "s3cr3t" not in text
    assert json.loads(text)["path"] == "/x"


def test_sampling_is_decided_by_the_request_id() -> None:
    ids = [f"{i * 0x01000000:08x}" + "0" * 24 for i in range(256)]
    assert all(sampled(i, 1.0) for i in ids)
    assert not any(sampled(i, 0.0) for i in ids)
    half = [i for i in ids if sampled(i, 0.5)]
    assert len(half) == 128 and half == [i for i in ids if sampled(i, 0.5)]


def test_access_log_config_is_validated_with_its_path() -> None:
    config = load_text(GOOD, base_dir=Path("/etc/isthmus"))
    assert not config.access_log.enabled and config.metrics.enabled
    bad = GOOD + '\n[access_log]\nenabled = true\npath = "rel.log"\nsample_rate = 1.5\n'
    with pytest.raises(ConfigInvalid) as info:
        load_text(bad, base_dir=Path("/etc/isthmus"))
    paths = {p.path for p in info.value.problems}
    assert paths == {"access_log.path", "access_log.sample_rate"}


def test_every_exported_metric_is_documented(tmp_path: Path) -> None:
    obs, _ = observer()
    names = set(re.findall(r"^# TYPE (\S+) ", obs.registry.render(), re.MULTILINE))
    status = {"b": {"up": True, "ping_rtt_s": 0.001, "links_established": 1}}
    names |= {g.name for g in link_gauges(status)}
    names |= {g.name for g in import_gauges(ImportTable(grace=1.0), 0.0)}
    names |= {g.name for g in catalog_gauges(Catalog(), 0.0)}
    names |= {g.name for g in outlier_gauges(OutlierDetector())}
    names |= {g.name for g in mirror_gauges(Mirrors())}
    names.add("isthmus_svid_expiry_seconds")  # identity_gauges needs a real SVID
    assert len(names) == 40
    doc = (ROOT / "docs" / "metrics.md").read_text("utf-8")
    documented = set(re.findall(r"^\| `(isthmus_[a-z_]+)` \|", doc, re.MULTILINE))
    assert names <= documented, names - documented


def test_a_writer_that_falls_behind_costs_lines_never_a_wait() -> None:
    obs, log = observer(max_buffer_bytes=4096)
    ctx = CallContext("a", None, 110.0)
    for _ in range(100):
        obs.finish(obs.begin_origin(request(b"api.default.isthmus"), ctx))
    kept = log.drain()
    assert 0 < len(kept) < 100 and log.dropped == 100 - len(kept)
    assert sum(len(x) + 1 for x in kept) <= 4096
    text = obs.registry.render()
    assert f"isthmus_access_log_dropped_total {log.dropped}" in text


async def test_queued_lines_are_written_in_batches_and_on_shutdown(tmp_path: Path) -> None:
    path = tmp_path / "access.log"
    log = AccessLog(str(path), 1.0, flush_interval_s=3600.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(log.serve)
        log.write('{"n":1}')
        log.write('{"n":2}')
        nursery.cancel_scope.cancel()  # shutdown: what queued is written
    assert path.read_text().splitlines() == ['{"n":1}', '{"n":2}']


def test_resolved_series_survive_their_cache_being_emptied(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The per-label-set cache is bounded; emptying it loses no count."""
    monkeypatch.setattr(observer_module, "_MAX_CACHED_SERIES", 2)
    obs = Observer(
        local_site="a", mesh_domain="isthmus", sites=["b"], known=lambda s: True, clock=lambda: 1.0
    )
    for i in range(30):
        rec = obs.begin_tunnel(b"svc%d.default.isthmus:80" % (i % 5), CallContext("a", None, 9.0))
        rec.status, rec.site, rec.bytes_out = 200, "b", 10
        obs.finish(rec)
    assert len(obs._series) <= 2
    assert sum(obs.requests.values.values()) == 30
    assert sum(obs.bytes_out.values.values()) == 300
    assert obs.responses.get(("origin", "other", "svc0.default", "b", "none", "2xx")) == 6
