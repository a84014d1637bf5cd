"""Metrics and access logs of real gateway processes (sites ``a`` and ``b``; ``b`` runs the
whoami service ``api``).

Both gateways log every request (``[access_log]`` to a file).  A request that carries a valid
W3C ``traceparent`` and every kind of credential crosses a -> b: both gateways write a line
with the caller's trace ID as request ID (the lines join), with the origin and destination
sites, the status and the body bytes, and no credential appears anywhere in either log.  A
request without ``traceparent`` gets a fresh ID that is the same at both ends.  Unknown
services answer 404 and a head too large 431: both are logged, and in ``/metrics`` they are
all one ``other`` series.
``/metrics`` of both gateways is parsed with prometheus-client's strict parser.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import trio
from prometheus_client.parser import text_string_to_metric_families

from gateway.demo.topology import DemoService
from tests.e2e.clients import h1_request, h2_request
from tests.e2e.harness import Overlay, make_topology, open_overlay, routes_of

HTTP_PORT = 15080
API_PORT = 18091
API = "api.default.isthmus"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
SECRETS = {
    "authorization": "Bearer s3cr3t-bearer-token-0001",
    "cookie": "session=s3cr3t-cookie-0002",
    "x-api-key": "s3cr3t-api-key-0007",
}
BODY = b"x" * 1000
TUNNELED = b"GET /through-the-tunnel HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n"


def access_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text("utf-8").splitlines() if line]


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Every sample; prometheus-client's parser raises on anything malformed."""
    return [
        (s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def value(found: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    return sum(v for n, lab, v in found if n == name and labels.items() <= lab.items())


async def scrape(ov: Overlay, site: str) -> list[tuple[str, dict[str, str], float]]:
    host = str(ov.built[site].site.address)
    reply = await h1_request(host, ov.topology.admin_port, authority="admin", path="/metrics")
    assert reply.status == 200, reply
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(reply.body.decode("utf-8"))


async def connect_tunnel(host: str, target: str, payload: bytes) -> bytes:
    """CONNECT through the gateway's HTTP listener, send ``payload``, read to EOF."""
    stream = await trio.open_tcp_stream(host, HTTP_PORT)
    try:
        await stream.send_all(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            piece = await stream.receive_some(4096)
            assert piece, head
            head += piece
        assert head.startswith(b"HTTP/1.1 200"), head
        await stream.send_all(payload)
        answer = head.split(b"\r\n\r\n", 1)[1]
        while piece := await stream.receive_some(65536):
            answer += piece
        return answer
    finally:
        await stream.aclose()


async def test_access_lines_join_across_gateways_and_metrics_parse(tmp_path: Path) -> None:
    topology = make_topology(["a", "b"], {"b": (DemoService("api", "http", API_PORT),)})
    logs = {name: tmp_path / f"{name}-access.log" for name in ("a", "b")}

    def patch(name: str, text: str) -> str:
        return text + f'\n[access_log]\nenabled = true\npath = "{logs[name]}"\n'

    async with open_overlay(tmp_path, topology, patch=patch, services=True) as ov:
        await ov.wait("a", "/routes", lambda d: routes_of(d, API) == ["b"])
        a = str(ov.built["a"].site.address)
        with trio.fail_after(60):
            for _ in range(100):  # the service may still be starting: 502/503 first
                probe = await h1_request(a, HTTP_PORT, authority=API)
                if probe.status == 200:
                    break
                await trio.sleep(0.1)
            assert probe.status == 200, probe
            traced = await h1_request(
                a,
                HTTP_PORT,
                authority=API,
                method="POST",
                path="/echo?access_token=s3cr3t-query-0008",
                headers={**SECRETS, "traceparent": TRACEPARENT},
                body=BODY,
            )
            assert traced.status == 200, traced
            assert (await h2_request(a, HTTP_PORT, authority=API)).status == 200
            for i in range(30):  # names from the network: logged, never their own series
                unknown = await h1_request(a, HTTP_PORT, authority=f"svc-{i}.default.isthmus")
                assert unknown.status == 404
            tunnel_reply = await connect_tunnel(a, f"{API}:{API_PORT}", TUNNELED)
            assert tunnel_reply.startswith(b"HTTP/1.1 200"), tunnel_reply
            big = {"x-big": "y" * (70 * 1024), **SECRETS}  # over max_header_bytes (60 KiB)
            too_large = await h1_request(a, HTTP_PORT, authority=API, headers=big)
            assert too_large.status == 431
            metrics_a = await scrape(ov, "a")
            metrics_b = await scrape(ov, "b")
    lines_a, lines_b = access_lines(logs["a"]), access_lines(logs["b"])

    # The traced request: the caller's trace ID at both ends, the sites, status and bytes.
    [origin] = [line for line in lines_a if line["request_id"] == TRACE]
    [dest] = [line for line in lines_b if line["request_id"] == TRACE]
    assert origin["side"] == "origin" and dest["side"] == "destination"
    assert origin["origin_site"] == dest["origin_site"] == "a"
    assert origin["destination_site"] == dest["destination_site"] == "b"
    assert origin["status"] == dest["status"] == 200
    assert origin["method"] == dest["method"] == "POST"
    assert origin["path"] == dest["path"] == "/echo"  # the query never reaches a log
    assert origin["bytes_in"] == dest["bytes_in"] == len(BODY)
    assert origin["bytes_out"] == dest["bytes_out"] > 0
    assert origin["listener"] == "http" and dest["listener"] == "east-west"
    assert origin["head_ms"] is not None and origin["duration_ms"] >= origin["head_ms"]
    assert origin["tried"] == []
    # The endpoint is named by the gateway that chose it: b (a handed the request to b).
    b_endpoint = f"{ov.built['b'].site.address}:{API_PORT}"
    assert dest["endpoint"] == b_endpoint and origin["endpoint"] is None

    # Every request that reached b has the same request ID on both sides.
    ids_b = {line["request_id"] for line in lines_b}
    ok_a = {line["request_id"] for line in lines_a if line["status"] == 200}
    assert len(ok_a) >= 3 and ok_a <= ids_b
    # The 404s are logged at the origin, one line each.
    not_found = [line for line in lines_a if line["status"] == 404]
    assert sorted(line["service"] for line in not_found) == sorted(
        f"svc-{i}.default" for i in range(30)
    )
    # A head too large never reached the router: logged all the same.
    [rejected] = [line for line in lines_a if line["status"] == 431]
    assert rejected["listener"] == "http" and rejected["destination_site"] is None

    # The CONNECT tunnel: one line at each end, joined, with the bytes each way.
    [t_origin] = [line for line in lines_a if line["kind"] == "tunnel"]
    [t_dest] = [line for line in lines_b if line["kind"] == "tunnel"]
    assert t_origin["request_id"] == t_dest["request_id"]
    assert t_origin["method"] == t_dest["method"] == "CONNECT"
    assert t_origin["status"] == t_dest["status"] == 200
    assert t_origin["bytes_in"] == t_dest["bytes_in"] == len(TUNNELED)
    assert t_origin["bytes_out"] == t_dest["bytes_out"] > 0
    assert t_origin["destination_site"] == "b" and t_dest["origin_site"] == "a"
    assert t_dest["endpoint"] == b_endpoint

    for text in (logs["a"].read_text("utf-8"), logs["b"].read_text("utf-8")):
        assert "s3cr3t" not in text

    # Metrics: counted per listener, service and site; unknown names grouped as "other".
    at_a = {"side": "origin", "listener": "http"}
    assert value(metrics_a, "isthmus_requests_total", **at_a, service="api.default", site="b") >= 3
    assert value(metrics_a, "isthmus_responses_total", **at_a, service="other", code="4xx") == 31
    assert not [lab for _, lab, _ in metrics_a if lab.get("service", "").startswith("svc-")]
    assert value(metrics_a, "isthmus_request_bytes_total", service="api.default") >= len(BODY)
    assert value(metrics_a, "isthmus_response_head_seconds_count", service="api.default") >= 3
    at_b = {"side": "destination", "listener": "east-west", "service": "api.default"}
    assert value(metrics_b, "isthmus_responses_total", **at_b, site="b", code="2xx") >= 3
    # State read at scrape time: the link, imports, the catalog, the SVID.
    assert value(metrics_a, "isthmus_link_up", peer="b") == 1
    assert value(metrics_a, "isthmus_link_established_total", peer="b") >= 1
    assert value(metrics_a, "isthmus_import_services", peer="b") >= 1
    assert value(metrics_b, "isthmus_catalog_endpoints", source="local", state="healthy") >= 1
    assert value(metrics_a, "isthmus_svid_expiry_seconds", trust_domain="a.e2e.test") > 0
