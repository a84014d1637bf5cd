"""The pure parts of scripts/bench_sites.py: topology, peers, expected routes, limits, fit.

The script's figures are only as good as these: a wrong expected-routes set would make it
report convergence before the federation converged (or never), a wrong peer map would measure
another topology than it names, and a limit check that passes would start 50 gateways only to
fail on their first dial.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from gateway.config.load import load_file
from gateway.demo.topology import DemoService, build_topology, gateway_config_text
from scripts.bench.sites_plan import (
    MachineLimits,
    PeeringKnobs,
    expected_routes,
    fit_line,
    fits,
    limit_problems,
    make_sites_topology,
    missing_routes,
    patch_peering,
    peer_map,
    render_table,
    report,
    site_view,
    with_service,
)


def _topology(n: int, services: int = 2):  # type: ignore[no-untyped-def]
    return make_sites_topology(
        n,
        block=11,
        services_per_site=services,
        ping_interval_s=5.0,
        ping_timeout_s=3.0,
        import_grace_s=30.0,
    )


def test_sites_get_distinct_loopback_addresses_and_trust_domains() -> None:
    t = _topology(50)
    addresses = [s.address for s in t.sites]
    assert len(set(addresses)) == 50
    assert all(a in ipaddress.IPv4Network("127.0.0.0/8") for a in addresses)
    assert str(addresses[49]) == "127.11.50.1"
    assert len({s.trust_domain for s in t.sites}) == 50
    with pytest.raises(ValueError, match="outside"):
        _topology(251)


def test_mesh_pairs_everyone_and_hub_pairs_the_first_with_the_rest() -> None:
    names = ["a", "b", "c", "d"]
    mesh = peer_map(names, "mesh")
    assert mesh["b"] == ("a", "c", "d")
    assert sum(len(p) for p in mesh.values()) == 4 * 3
    hub = peer_map(names, "hub")
    assert hub == {"a": ("b", "c", "d"), "b": ("a",), "c": ("a",), "d": ("a",)}


def test_expected_routes_name_own_and_peer_services_only() -> None:
    t = _topology(3, services=1)
    want = expected_routes(t, peer_map(["s000", "s001", "s002"], "hub"))
    assert want["s000"] == {"svc0.default.isthmus": frozenset({"s000", "s001", "s002"})}
    assert want["s001"] == {"svc0.default.isthmus": frozenset({"s000", "s001"})}


def test_missing_routes_counts_absent_sites_per_address() -> None:
    want = {"x.default.isthmus": frozenset({"a", "b"}), "y.default.isthmus": frozenset({"a"})}
    assert missing_routes({"routes": {"x.default.isthmus": ["b", "a"]}}, want) == 1
    assert missing_routes({"routes": {"x.default.isthmus": ["a"]}}, want) == 2
    doc = {"routes": {"x.default.isthmus": ["a", "b"], "y.default.isthmus": ["a", "z"]}}
    assert missing_routes(doc, want) == 0
    assert missing_routes("not a document", want) == 3


def test_a_spokes_config_names_only_its_hub(tmp_path: Path) -> None:
    t = _topology(3, services=1)
    build_topology(t, tmp_path)
    peers = peer_map([s.name for s in t.sites], "hub")
    spoke = t.sites[2]
    text = gateway_config_text(site_view(t, spoke.name, peers[spoke.name]), spoke, tmp_path)
    path = tmp_path / "spoke.toml"
    path.write_text(text, "utf-8")
    config = load_file(path)
    assert [p.name for p in config.peers] == ["s000"]
    assert len(config.identity.bundles) == 2


def test_with_service_adds_to_one_site_only() -> None:
    t = _topology(2, services=1)
    changed = with_service(t, "s001", DemoService("chg0", "http", 19000))
    assert [s.service for s in changed.sites[1].services] == ["svc0", "chg0"]
    assert changed.sites[0].services == t.sites[0].services


def _limits(**changes: object) -> MachineLimits:
    base = {
        "nofile": 1024,
        "port_range": (32768, 60999),
        "mem_available": 16 * 2**30,
        "max_processes": -1,
        "processes": 10,
    }
    base.update(changes)
    return MachineLimits(**base)  # type: ignore[arg-type]


def test_limit_problems_say_which_limit_and_by_how_much() -> None:
    assert limit_problems(50, 49, _limits(), 90 * 2**20) == []
    fds = limit_problems(50, 49, _limits(nofile=100), 90 * 2**20)
    assert any("file descriptors" in p and "ulimit -n" in p and "100" in p for p in fds)
    ports = limit_problems(50, 49, _limits(port_range=(60000, 60999)), 90 * 2**20)
    assert any(p.startswith("ephemeral ports: up to 2450") for p in ports)
    mem = limit_problems(50, 49, _limits(mem_available=2 * 2**30), 90 * 2**20)
    assert any(p.startswith("memory: 50 gateways") for p in mem)
    procs = limit_problems(50, 49, _limits(max_processes=40), 90 * 2**20)
    assert any(p.startswith("processes:") for p in procs)


def test_fit_line_recovers_slope_and_intercept() -> None:
    line = fit_line([4, 9, 24, 49], [100 + 3 * x for x in (4, 9, 24, 49)])
    assert line is not None
    assert line[0] == pytest.approx(3.0)
    assert line[1] == pytest.approx(100.0)
    assert fit_line([5, 5], [1, 2]) is None
    assert fit_line([1], [1]) is None


def test_render_table_aligns_and_marks_missing_values() -> None:
    text = render_table([("n", "N"), ("t", "time s")], [{"n": 5, "t": 0.1234}, {"n": 50}])
    assert text.splitlines() == [" N  time s", " 5   0.123", "50       -"]


def test_one_sided_dial_has_exactly_one_dialer_per_pair() -> None:
    t = _topology(4, services=0)
    names = [s.name for s in t.sites]
    peers = peer_map(names, "mesh")
    dials = {
        (site, other.name): other.dial
        for site in names
        for other in site_view(t, site, peers[site], dial="one").sites[1:]
    }
    for a in names:
        for b in names:
            if a < b:
                assert dials[(a, b)] != dials[(b, a)]
    assert all(site_view(t, "s001", peers["s001"]).sites[i].dial for i in range(1, 4))


def test_patch_peering_sets_the_knobs_and_the_config_loads(tmp_path: Path) -> None:
    t = _topology(2, services=1)
    build_topology(t, tmp_path)
    text = gateway_config_text(t, t.sites[0], tmp_path)
    knobs = PeeringKnobs(connect_timeout_s=20.0, backoff_base_s=0.5, backoff_cap_s=60.0)
    path = tmp_path / "patched.toml"
    path.write_text(patch_peering(text, knobs), "utf-8")
    peering = load_file(path).peering
    assert (peering.connect_timeout_s, peering.backoff_base_s, peering.backoff_cap_s) == (
        20.0,
        0.5,
        60.0,
    )
    with pytest.raises(ValueError, match="backoff"):
        patch_peering(text.replace("backoff_cap_s = 5.0", "backoff_cap_s = 6.0"), knobs)


def _row(n: int, rss_base: int, per_peer: int) -> dict[str, object]:
    processes = [
        {"site": f"s{i}", "peers": n - 1, "rss": rss_base + per_peer * (n - 1), "fds": 12 + n - 1,
         "streams": 3 * (n - 1), "links": n - 1}
        for i in range(n)
    ]  # fmt: skip
    return {
        "sites": n, "peers_max": n - 1, "processes": processes, "rss_median": processes[0]["rss"],
        "idle_cpu_cores": n * (0.001 + 0.0002 * (n - 1)),
    }  # fmt: skip


def test_fits_give_growth_per_peer_and_skip_failed_sizes() -> None:
    failed = {
        "sites": 50, "peers_max": 49, "error": "did not converge", "startup_cpu_s": 61.0,
        "diagnosis": {"peers_up_median": 3, "peers_up_min": 0, "links_answered": 50,
                      "handshake_timeouts_median": 276, "ping_timeouts_median": 27,
                      "dial_failures_median": 313},
    }  # fmt: skip
    rows = [_row(5, 65 << 20, 170 << 10), _row(25, 65 << 20, 170 << 10), failed]
    fit = fits(rows)
    assert fit["rss"]["per_peer"] == pytest.approx(170 << 10)
    assert fit["fds"]["per_peer"] == pytest.approx(1.0)
    assert fit["idle_cpu_cores_per_gateway"]["per_peer"] == pytest.approx(0.0002)
    text = report(rows, fit)
    assert "RSS per gateway: 170 KiB per peer (fit at 0 peers: 65.0 MiB)" in text
    assert "50 sites did not converge: did not converge" in text
    assert "276 handshake timeouts" in text
    assert len([line for line in text.splitlines() if line.lstrip().startswith(("5 ", "25 "))]) == 2
