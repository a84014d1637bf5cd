"""The reload plan: what a new config changes, and what rejects it (pure, no I/O)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.load import load_text
from gateway.config.model import GatewayConfig
from gateway.reload.plan import config_version, plan_reload
from tests.gateway.config.config_kit import GOOD

HTTP = '\n[[listeners]]\nname = "http"\nkind = "http"\naddress = "127.0.1.1"\nport = 15080\n'


def _config(text: str) -> GatewayConfig:
    return load_text(text, base_dir=Path("/etc/isthmus"))


def test_the_same_config_is_an_empty_plan() -> None:
    plan = plan_reload(_config(GOOD), _config(GOOD + "\n# a comment\n"))
    assert plan.empty and plan.changes == () and plan.problems == ()


def test_version_is_the_file_text_hash() -> None:
    assert config_version(GOOD) == config_version(GOOD)
    assert config_version(GOOD) != config_version(GOOD + " ")
    assert len(config_version(GOOD)) == 12


def test_live_sections_are_planned_not_rejected() -> None:
    new = (
        GOOD.replace("port = 8080", "port = 8081")
        + '\n[[policies]]\nallow_sites = ["gcp-west"]\n'
        + '\n[[exports]]\nservice = "api"\n'
        + '\n[[caller_headers]]\nservice = "api"\nenabled = false\n'
        + HTTP
    )
    plan = plan_reload(_config(GOOD), _config(new))
    assert plan.problems == ()
    assert plan.changes == ("policies", "exports", "caller_headers", "sources", "listeners")
    assert plan.sources_removed == ()
    assert [b.name for b in plan.listeners.start] == ["http"] and plan.listeners.stop == ()


def test_removed_source_and_listener_are_stopped() -> None:
    old = _config(GOOD + HTTP)
    new = _config(GOOD.split("[[sources]]")[0])
    plan = plan_reload(old, new)
    assert plan.sources and plan.sources_removed == ("local",)
    assert plan.listeners.stop == ("listener http",) and plan.listeners.start == ()


def test_a_changed_listener_is_replaced() -> None:
    plan = plan_reload(_config(GOOD + HTTP), _config(GOOD + HTTP.replace("15080", "15081")))
    assert plan.listeners.stop == ("listener http",)
    assert [b.port for b in plan.listeners.start] == [15081]


def test_per_request_limits_are_live() -> None:
    new = GOOD + "\n[limits]\nmax_header_bytes = 2048\nroute_timeout_s = 5.0\n"
    new += "mirror_buffer_budget = 1024\n"  # the routes' mirrors read it per copy
    plan = plan_reload(_config(GOOD), _config(new))
    assert plan.problems == () and plan.changes == ("limits",)


def test_peers_are_live() -> None:
    new = GOOD.replace('address = "127.0.2.1"', 'address = "127.0.2.2"')
    plan = plan_reload(_config(GOOD), _config(new))
    assert plan.problems == () and plan.changes == ("peers",)


def test_identity_paths_are_live() -> None:
    plan = plan_reload(_config(GOOD), _config(GOOD.replace('"svid.pem"', '"new/svid.pem"')))
    assert plan.problems == () and plan.changes == ("identity",)


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (lambda t: t.replace('name = "aws-east"', 'name = "aws-east2"'), "site.name"),
        (lambda t: t.replace("15443\n\n[[peers]]", "15444\n\n[[peers]]"), "listeners"),
        (lambda t: t + "\n[limits]\nmax_connections = 50\n", "limits.max_connections"),
        (lambda t: t + "\n[limits]\nbuffer_budget = 1048576\n", "limits.buffer_budget"),
        (
            lambda t: t + "\n[limits]\nlink_stream_window_max = 2097152\n",
            "limits.link_stream_window_max",
        ),
        (lambda t: t + "\n[limits]\nlink_max_per_peer = 2\n", "limits.link_max_per_peer"),
        (lambda t: t + "\n[peering]\nping_interval_s = 1.0\n", "peering"),
        (lambda t: t + "\n[metrics]\nenabled = false\n", "metrics"),
        (
            lambda t: t.replace(
                'trust_domain = "aws-east.isthmus.test"\n\n[identity]',
                'trust_domain = "aws-east.isthmus.test"\nlocality = "az-1"\n\n[identity]',
            ),
            "site.locality",
        ),
        (lambda t: t + '\n[debug]\nallow_cidrs = ["10.0.0.0/8"]\n', "debug"),
    ],
)
def test_sections_that_need_a_restart_reject_the_reload(edit: object, path: str) -> None:
    assert callable(edit)
    plan = plan_reload(_config(GOOD), _config(edit(GOOD)))
    assert [p.path for p in plan.problems] == [path]
    assert "restart" in plan.problems[0].message


def test_every_problem_is_reported_at_once() -> None:
    new = GOOD.replace('name = "aws-east"', 'name = "aws-east2"')
    new += "\n[limits]\nlink_max_frame_size = 32768\n"
    plan = plan_reload(_config(GOOD), _config(new))
    assert sorted(p.path for p in plan.problems) == ["limits.link_max_frame_size", "site.name"]


RULE = '\n[[service_traffic]]\nservice = "api"\n'


def test_retries_and_breakers_alone_apply_live() -> None:
    old = _config(GOOD + RULE + "[service_traffic.retries]\nmax_retries = 1\n")
    new = _config(
        GOOD
        + RULE
        + '[service_traffic.retries]\nmax_retries = 3\non = ["5xx"]\n'
        + "[service_traffic.breakers]\nmax_requests = 10\n"
    )
    plan = plan_reload(old, new)
    assert plan.problems == () and plan.changes == ("service_traffic",)


def test_balancer_outlier_and_health_check_changes_and_new_rules_apply_live() -> None:
    """The rest of a rule, and the rules' order, apply live too (traffic_plan.py)."""
    for changed in (
        RULE + 'lb = "least_request"\n',
        RULE + RULE,
        '\n[[service_traffic]]\nservice = "db"\n',
        RULE + "[service_traffic.health_check]\ninterval_s = 5.0\n",
        RULE + "outlier_detection = { consecutive_5xx = 2 }\n",
        "",
    ):
        plan = plan_reload(_config(GOOD + RULE), _config(GOOD + changed))
        assert plan.problems == () and plan.changes == ("service_traffic",), changed


def test_site_outlier_detection_applies_live() -> None:
    plan = plan_reload(
        _config(GOOD), _config(GOOD + "\n[outlier_detection]\nconsecutive_5xx = 3\n")
    )
    assert plan.problems == () and plan.changes == ("outlier_detection",)
    assert plan.traffic.outlier and not plan.traffic.balancers


def test_routes_are_live() -> None:
    route = '\n[[routes]]\naddress = "api.payments"\ndirect_response = { status = 503 }\n'
    plan = plan_reload(_config(GOOD), _config(GOOD + route))
    assert plan.problems == () and plan.changes == ("routes",)
    assert plan_reload(_config(GOOD + route), _config(GOOD + route)).empty


def test_a_new_link_engine_needs_a_restart() -> None:
    """Links hold their HTTP/2 engine for life: switching it is refused, not half-applied."""
    plan = plan_reload(_config(GOOD), _config(GOOD + '\n[limits]\nlink_h2_engine = "h2"\n'))
    assert [p.path for p in plan.problems] == ["limits.link_h2_engine"]


def test_a_new_caller_engine_needs_a_restart() -> None:
    """A caller listener builds its connections' HTTP/2 limits once: switching is refused."""
    plan = plan_reload(_config(GOOD), _config(GOOD + '\n[limits]\ncaller_h2_engine = "h2"\n'))
    plan_back = plan_reload(
        _config(GOOD + '\n[limits]\ncaller_h2_engine = "h2"\n'),
        _config(GOOD + '\n[limits]\ncaller_h2_engine = "lean"\n'),
    )
    assert [p.path for p in plan.problems] == ["limits.caller_h2_engine"]
    assert [p.path for p in plan_back.problems] == ["limits.caller_h2_engine"]


CONSUL = '\n[[sources]]\nkind = "consul"\nname = "consul"\naddress = "http://127.0.0.1:8500"\n'
DISCOVER = (
    '\n[[peers]]\nname = "gcp-b"\ndiscover = "consul"\n'
    'spiffe_id = "spiffe://gcp-b.isthmus.test/isthmus/gateway/gcp-b"\n'
)


def test_consul_discovery_of_replicas_on_reload() -> None:
    """A discovering peer can be added live when the watch runs, not on a gateway without it;
    the watch's Consul agent and [consul_gateways] need a restart."""
    plain, watching = _config(GOOD + CONSUL), _config(GOOD + DISCOVER + CONSUL)
    assert [p.path for p in plan_reload(plain, watching).problems] == ["peers"]
    assert plan_reload(watching, plain).problems == ()
    moved = _config(GOOD + DISCOVER + CONSUL.replace("8500", "8501"))
    assert [p.path for p in plan_reload(watching, moved).problems] == ["sources"]
    registering = _config(GOOD + CONSUL + "\n[consul_gateways]\nregister = true\n")
    assert [p.path for p in plan_reload(plain, registering).problems] == ["consul_gateways"]
