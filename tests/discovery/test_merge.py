"""Source precedence: config order decides attributes; every reporting source is recorded."""

from __future__ import annotations

import immutables

from discovery.merge import DEFAULT_GRACE_S, Policy, merge_entry, recompute
from discovery.model import Endpoint, EndpointKey, ServiceName
from discovery.snapshot import Report, SourceState
from discovery.sources.config import (
    ConsulSourceConfig,
    MdnsSourceConfig,
    StaticSourceConfig,
    precedence,
)

API = ServiceName("api")


def report(weight: int, healthy: bool = True) -> Report:
    return Report(Endpoint(API, "10.0.0.1", 80, weight=weight, healthy=healthy), "1", 0.0)


KEY = EndpointKey(API, "10.0.0.1", 80)


def test_policy_from_config_uses_config_order_and_consul_grace() -> None:
    configs = [
        MdnsSourceConfig(kind="mdns", name="lan"),
        StaticSourceConfig(kind="static", name="pins"),
        ConsulSourceConfig(kind="consul", name="dc1", stale_grace_s=12.0),
    ]
    policy = Policy.from_sources(precedence(configs))
    assert policy.ordered(["dc1", "pins", "lan", "zz", "aa"]) == ["lan", "pins", "dc1", "aa", "zz"]
    assert policy.grace_for("dc1") == 12.0
    assert policy.grace_for("lan") == DEFAULT_GRACE_S == policy.grace_for("unknown")


def test_highest_precedence_source_supplies_every_attribute() -> None:
    views = {"mdns": {KEY: report(1, healthy=True)}, "static": {KEY: report(9, healthy=False)}}
    entry = merge_entry(KEY, ["static", "consul", "mdns"], views)
    assert entry is not None
    assert entry.sources == ("static", "mdns")
    assert entry.endpoint.weight == 9 and not entry.endpoint.healthy
    assert merge_entry(KEY, ["consul"], views) is None


def test_recompute_ignores_expired_sources() -> None:
    policy = Policy(order=("static", "mdns"))
    views = {
        "static": immutables.Map({KEY: report(9)}),
        "mdns": immutables.Map({KEY: report(1)}),
    }
    sources = {"static": SourceState("static", expired=True), "mdns": SourceState("mdns")}
    merged = recompute(policy, sources, views)
    entry = merged[API][KEY]
    assert entry.sources == ("mdns",) and entry.endpoint.weight == 1
    sources["mdns"] = SourceState("mdns", expired=True)
    assert len(recompute(policy, sources, views)) == 0


def test_the_merge_rule_depends_on_no_source() -> None:
    """Precedence comes in as plain values: merge.py imports no source nor its config."""
    import ast
    from pathlib import Path

    import discovery.merge

    tree = ast.parse(Path(discovery.merge.__file__).read_text())
    nodes = list(ast.walk(tree))
    imported = {n.module for n in nodes if isinstance(n, ast.ImportFrom) and n.module} | {
        alias.name for n in nodes if isinstance(n, ast.Import) for alias in n.names
    }
    assert not {m for m in imported if m.startswith("discovery.sources")}
