"""``GET /overlay``: the document the overlay map page draws (pure core), its rate window,
and the page's assets as the admin server answers them."""

from __future__ import annotations

import json
from typing import Any

import pytest
import trio

from discovery.catalog import apply_many
from discovery.events import Added, SourceStale
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from discovery.steps import complete
from gateway.admin.overlay_map import (
    MAX_ENDPOINTS_CHECKED,
    MAX_SERVICE_ROWS,
    MAX_SERVICES_PER_SITE,
    MAX_TEXT,
    overlay_json,
)
from gateway.admin.page import ASSETS, CONTENT_SECURITY_POLICY, page_views
from gateway.admin.server import serve_admin
from gateway.admin.traffic import FROM_PEERS, RateWindow, SiteTotals, site_totals
from gateway.observe.metrics import Registry
from overlay.federation.config import ExportConfig
from overlay.federation.import_ import ImportTable, ImportUpdate
from overlay.federation.protocol import ExportedService

POLICY = Policy(order=("static", "consul"))
API = ServiceName("api", "payments")
WEB = ServiceName("web", "default")


def ep(service: ServiceName, address: str, **kw: Any) -> Endpoint:
    return Endpoint(service, address, 8080, **kw)


def catalog(*endpoints: Endpoint, stale_source: str | None = None) -> Catalog:
    events: list[Any] = [Added("static", e, "1", 0.0) for e in endpoints]
    if stale_source is not None:
        events.append(SourceStale(stale_source, "down", 0.0))
    return apply_many(Catalog(), events, now=0.0, policy=POLICY)[0]


def exported(name: ServiceName, healthy: int, total: int) -> ExportedService:
    return ExportedService(name, ("http1",), healthy, total, healthy, ())


def imports(**peers: tuple[ExportedService, ...]) -> ImportTable:
    table = ImportTable(grace=30.0)
    for site, services in peers.items():
        table = table.apply(ImportUpdate(site, "e1", 1, True, services), now=0.0)
    return table


def link(up: bool, rtt: float | None = 0.0004, **kw: Any) -> dict[str, Any]:
    return {
        "up": up,
        "ping_rtt_s": rtt,
        "dialed_link": up,
        "accepted_link": False,
        "failed_attempts": 0 if up else 3,
        "links_established": 1,
        "last_error": None if up else "connect: refused",
        "up_for_s": 5.0 if up else None,
        **kw,
    }


def node(doc: dict[str, Any], site: str) -> dict[str, Any]:
    (found,) = [n for n in doc["nodes"] if n["site"] == site]
    return found


def doc_for(**kw: Any) -> dict[str, Any]:
    args: dict[str, Any] = {
        "local_site": "a",
        "links": {"b": link(True), "c": link(True)},
        "imports": imports(b=(exported(WEB, 2, 2),), c=(exported(WEB, 1, 1),)),
        "catalog": catalog(ep(API, "10.0.0.1"), ep(API, "10.0.0.2")),
        "export_rules": (ExportConfig(),),
        "now": 10.0,
        "rates": None,
    }
    args.update(kw)
    return overlay_json(**args)


def test_three_sites_all_up_with_links_services_and_exports() -> None:
    doc = doc_for()
    assert doc["site"] == "a"
    assert [(n["site"], n["local"], n["state"]) for n in doc["nodes"]] == [
        ("a", True, "up"),
        ("b", False, "up"),
        ("c", False, "up"),
    ]
    assert [(e["from"], e["to"], e["state"], e["rtt_ms"]) for e in doc["edges"]] == [
        ("a", "b", "up", 0.4),
        ("a", "c", "up", 0.4),
    ]
    (api,) = node(doc, "a")["services"]
    assert (api["service"], api["namespace"], api["healthy"], api["total"]) == (
        "api",
        "payments",
        2,
        2,
    )
    assert api["exported_to"] == ["b", "c"]
    (web,) = node(doc, "b")["services"]
    assert (web["healthy"], web["total"], web["state"], web["stale"]) == (2, 2, "up", False)
    assert doc["metrics"] is False  # no rates given: the page says "metrics off"
    json.dumps(doc)  # plain JSON all the way down


def test_a_peer_whose_link_is_down_is_down_with_its_imports_stale() -> None:
    table = imports(b=(exported(WEB, 2, 2),), c=(exported(WEB, 1, 1),)).link_down("c", now=4.0)
    doc = doc_for(links={"b": link(True), "c": link(False)}, imports=table)
    c = node(doc, "c")
    assert c["state"] == "down"
    assert c["reasons"] == ["link down", "imports stale, withdrawn in 24 s"]
    assert c["services"][0]["stale"] is True
    (edge,) = [e for e in doc["edges"] if e["to"] == "c"]
    assert (edge["state"], edge["rtt_ms"], edge["last_error"]) == ("down", None, "connect: refused")
    assert node(doc, "b")["state"] == "up"


def test_degraded_is_told_apart_from_down_and_says_why() -> None:
    doc = doc_for(
        imports=imports(b=(exported(WEB, 1, 3),), c=(exported(WEB, 0, 2),)),
        catalog=catalog(ep(API, "10.0.0.1"), ep(API, "10.0.0.2", healthy=False)),
    )
    assert node(doc, "a")["state"] == "degraded"
    assert node(doc, "a")["services"][0]["state"] == "degraded"
    assert node(doc, "b")["state"] == "degraded"
    assert node(doc, "b")["reasons"] == ["1 of 1 services not fully healthy"]
    assert node(doc, "c")["services"][0]["state"] == "down"
    assert node(doc, "c")["state"] == "degraded"  # its link is up: the site is not down


def test_a_stale_source_degrades_this_site() -> None:
    doc = doc_for(catalog=catalog(ep(API, "10.0.0.1"), stale_source="static"))
    assert node(doc, "a")["state"] == "degraded"
    assert "source static stale" in node(doc, "a")["reasons"]


def test_exports_follow_the_consent_rules_per_peer() -> None:
    rules = (ExportConfig(service="api", peers=("c",)),)
    doc = doc_for(
        catalog=catalog(ep(API, "10.0.0.1"), ep(WEB, "10.0.0.3")),
        export_rules=rules,
    )
    services = {s["service"]: s["exported_to"] for s in node(doc, "a")["services"]}
    assert services == {"api": ["c"], "web": []}


def test_size_is_bounded_and_long_texts_cut() -> None:
    many = [ep(ServiceName(f"svc-{i:04d}", "default"), "10.0.0.1") for i in range(300)]
    long_error = "x" * 5000
    doc = doc_for(
        catalog=catalog(*many),
        links={"b": link(False, last_error=long_error), "c": link(True)},
    )
    a = node(doc, "a")
    assert len(a["services"]) == MAX_SERVICES_PER_SITE
    assert a["more_services"] == 300 - MAX_SERVICES_PER_SITE
    (edge,) = [e for e in doc["edges"] if e["to"] == "b"]
    assert len(edge["last_error"]) == MAX_TEXT
    assert len(json.dumps(doc)) < 64 * 1024


def test_the_work_on_a_large_catalog_is_bounded_and_the_rest_unknown() -> None:
    # 150 services of 100 endpoints; a tag rule no endpoint has: every endpoint is checked
    # for both peers, so the budget runs out part-way through the listed services.
    per = 100
    many = [
        ep(ServiceName(f"svc-{i:03d}", "default"), f"10.0.{j // 250}.{j % 250}")
        for i in range(150)
        for j in range(per)
    ]
    doc = doc_for(catalog=catalog(*many), export_rules=(ExportConfig(tags=("public",)),))
    services = node(doc, "a")["services"]
    known = [s for s in services if s["healthy"] is not None]
    unknown = [s for s in services if s["healthy"] is None]
    assert services[: len(known)] == known  # the first ones, in order, then unknown ones
    assert len(known) <= MAX_ENDPOINTS_CHECKED // (per * 3) + 1
    assert unknown and all(
        (s["exported_to"], s["state"], s["total"]) == (None, None, per) for s in unknown
    )
    assert all((s["healthy"], s["exported_to"]) == (per, []) for s in known)
    assert node(doc, "a")["state"] == "up"  # unknown is not counted as unhealthy


def test_service_rows_are_bounded_in_all() -> None:
    imported = tuple(exported(ServiceName(f"s{i:03d}", "default"), 1, 1) for i in range(150))
    table = imports(**{f"p{k:02d}": imported for k in range(20)})
    links = {f"p{k:02d}": link(True) for k in range(20)}
    doc = doc_for(imports=table, links=links)
    rows = sum(len(n["services"]) for n in doc["nodes"])
    assert rows == MAX_SERVICE_ROWS
    assert sum(len(n["services"]) + n["more_services"] for n in doc["nodes"]) == 1 + 20 * 150
    assert len(json.dumps(doc)) < 512 * 1024


def test_rates_come_from_counter_deltas_over_the_window() -> None:
    registry = Registry()
    labels = ("side", "listener", "service", "site")
    requests = registry.counter("r_total", "", labels)
    bytes_in = registry.counter("bi_total", "", labels)
    bytes_out = registry.counter("bo_total", "", labels)

    def count(side: str, site: str, n: int, nbytes: int) -> None:
        requests.inc((side, "http", "api.payments", site), n)
        bytes_in.inc((side, "http", "api.payments", site), nbytes)
        bytes_out.inc((side, "http", "api.payments", site), nbytes)

    count("origin", "b", 10, 100)
    count("destination", "a", 4, 0)
    window = RateWindow(window_s=30.0, min_step_s=1.0)
    window = window.add(100.0, site_totals(requests, bytes_in, bytes_out))
    assert window.rates(["b"]) == {"b": None}  # one sample: no interval yet
    count("origin", "b", 20, 500)
    count("origin", "c", 5, 0)
    count("destination", "a", 6, 0)
    window = window.add(110.0, site_totals(requests, bytes_in, bytes_out))
    rates = window.rates(["b", "c", FROM_PEERS, "nowhere"])
    assert {k: (r.requests_per_s, r.bytes_per_s, r.over_s) for k, r in rates.items() if r} == {
        "b": (2.0, 100.0, 10.0),
        "c": (0.5, 0.0, 10.0),
        FROM_PEERS: (0.6, 0.0, 10.0),
        "nowhere": (0.0, 0.0, 10.0),
    }
    doc = doc_for(rates=rates, window_s=30.0)
    (edge_b,) = [e for e in doc["edges"] if e["to"] == "b"]
    assert edge_b["traffic"] == {"requests_per_s": 2.0, "bytes_per_s": 100.0, "over_s": 10.0}
    assert node(doc, "a")["traffic"]["from_peers"]["requests_per_s"] == 0.6


def test_rate_window_stays_bounded_whatever_the_poll_rate() -> None:
    window = RateWindow(window_s=30.0, min_step_s=1.0, max_samples=8)
    for i in range(1000):  # a poll every 0.1 s for 100 s
        window = window.add(i / 10, {"b": SiteTotals(float(i), 0.0)})
    assert len(window.samples) <= 8
    times = [t for t, _ in window.samples]
    assert times == sorted(times) and times[-1] == 99.0
    rate = window.rates(["b"])["b"]
    assert rate is not None and rate.requests_per_s == 10.0


async def test_the_page_is_served_with_its_types_and_a_strict_csp() -> None:
    views = {**page_views(), "/overlay": lambda: doc_for()}
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            lambda task_status: serve_admin(
                views, host="127.0.0.1", port=0, task_status=task_status
            )
        )
        for path, (_name, content_type) in ASSETS.items():
            head, body = await _get(port, path)
            assert head.startswith(b"HTTP/1.1 200"), head
            fields = _fields(head)
            assert fields["content-type"] == content_type
            assert fields["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert fields["x-content-type-options"] == "nosniff"
            assert body
        _head, html = await _get(port, "/")
        assert b'<script src="overlay-map.js" defer></script>' in html
        assert b"<script>" not in html and b" style=" not in html  # nothing inline for the CSP
        _head, body = await _get(port, "/overlay")
        assert json.loads(body)["site"] == "a"
        nursery.cancel_scope.cancel()


def _fields(head: bytes) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        out[name.strip().lower()] = value.strip()
    return out


async def _get(port: int, path: str) -> tuple[bytes, bytes]:
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(
                f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode()
            )
            data = b""
            while chunk := await stream.receive_some(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def test_the_view_reuses_costly_parts_only_while_the_snapshots_are_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from types import SimpleNamespace

    from discovery.watch import Watch
    from gateway.admin import overlay_view as adapter

    calls: list[str] = []
    real_local, real_imported = adapter.local_part_steps, adapter.imported_part

    def counted_local(*args: Any) -> Any:
        calls.append("local")
        return real_local(*args)

    def counted_imported(*args: Any) -> Any:
        calls.append("imported")
        return real_imported(*args)

    monkeypatch.setattr(adapter, "local_part_steps", counted_local)
    monkeypatch.setattr(adapter, "imported_part", counted_imported)
    snapshot = Watch(catalog(ep(API, "10.0.0.1")))
    imported = Watch(imports(b=(exported(WEB, 1, 1),)))
    peering = SimpleNamespace(
        status=lambda: {"b": link(True)}, imports=imported, export_rules=(ExportConfig(),)
    )
    now = [100.0]
    sliced = adapter.overlay_view("a", peering, snapshot, None, clock=lambda: now[0])  # type: ignore[arg-type]

    def view() -> Any:
        return complete(sliced().steps)  # the admin server runs it a slice per step

    first = view()
    assert calls == ["local", "imported"]
    now[0] += 1.0
    assert view() == first  # nothing changed: both parts reused
    assert calls == ["local", "imported"]
    snapshot.publish(catalog(ep(API, "10.0.0.1"), ep(API, "10.0.0.2", healthy=False)))
    assert node(view(), "a")["services"][0]["healthy"] == 1  # a new catalog: recomputed
    assert calls == ["local", "imported", "local"]
    now[0] += adapter.LOCAL_REUSE_S  # routability may change with time alone
    view()
    assert calls == ["local", "imported", "local", "local"]
    imported.publish(imported.latest.link_down("b", now=now[0]))
    assert node(view(), "b")["services"][0]["stale"] is True
    assert calls[-1] == "imported"
    assert view()["metrics"] is False  # no observer: metrics off, no rates
