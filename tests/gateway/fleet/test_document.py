"""The fleet document and its merge into a site's config (pure, no I/O)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.config.errors import ConfigInvalid
from gateway.fleet.document import (
    EMPTY,
    FleetDocumentInvalid,
    diff,
    load_document_text,
    parse_document,
)
from gateway.fleet.merge import load_with_fleet, warnings_with_fleet
from gateway.reload.plan import plan_reload
from tests.gateway.config.config_kit import GOOD

DOC = """
[[resources]]
kind = "policies"
name = "api-from-west"
targets = ["aws-east"]
[resources.spec]
service = "api"
allow_sites = ["gcp-west"]

[[resources]]
kind = "service_traffic"
name = "api-retries"
[resources.spec]
service = "api"
retries = { max_retries = 2 }

[[resources]]
kind = "exports"
name = "api"
targets = ["*"]
[resources.spec]
service = "api"
"""


def _site(text: str = GOOD) -> tuple[str, Path]:
    return text, Path("/etc/isthmus")


def test_version_is_stable_under_reordering_and_changes_with_content() -> None:
    doc = load_document_text(DOC)
    blocks = DOC.split("[[resources]]")[1:]
    reordered = "".join("[[resources]]" + b for b in reversed(blocks))
    assert load_document_text(reordered).version == doc.version
    # Targets are a set: order and repeats do not matter either.
    as_json = json.loads(doc.canonical_json())
    as_json["resources"][0]["targets"] = ["*", "*"]
    assert parse_document(as_json).version == doc.version
    changed = load_document_text(DOC.replace("max_retries = 2", "max_retries = 3"))
    assert changed.version != doc.version and len(doc.version) == 12
    # The canonical order is (kind, name); JSON in, same document out.
    assert [r.kind for r in doc.resources] == ["exports", "policies", "service_traffic"]
    assert load_document_text(doc.canonical_json()) == doc


def test_targets_select_sites() -> None:
    doc = load_document_text(DOC)
    assert [r.name for _, r in doc.for_site("aws-east")] == ["api", "api-from-west", "api-retries"]
    assert [r.name for _, r in doc.for_site("gcp-west")] == ["api", "api-retries"]


def test_every_structure_and_spec_problem_with_its_path() -> None:
    bad = DOC.replace("max_retries = 2", "max_retries = -1").replace(
        'kind = "exports"', 'kind = "routez"'
    )
    bad += '\n[[resources]]\nkind = "policies"\nname = "api-from-west"\n'  # a duplicate
    bad += '\n[[resources]]\nkind = "policies"\nname = "Bad_Name"\ntargets = []\nextra = 1\n'
    with pytest.raises(FleetDocumentInvalid) as err:
        load_document_text(bad)
    paths = {p for p, _ in err.value.problems}
    assert paths == {
        "resources[1].spec.retries.max_retries",
        "resources[2].kind",
        "resources[3].name",
        "resources[4].name",
        "resources[4].targets",
        "resources[4].extra",
    }


def test_merged_config_validates_with_paths_into_the_document() -> None:
    text, base = _site()
    doc = load_document_text(DOC)
    config = load_with_fleet(text, doc, base_dir=base)
    assert [p.service for p in config.policies] == ["api"]
    assert config.exports[0].service == "api"
    assert config.service_traffic[0].retries.max_retries == 2
    # A site the policy does not target does not get it.
    west = text.replace('name = "aws-east"', 'name = "gcp-west-2"', 1)
    assert load_with_fleet(west, doc, base_dir=base).policies == ()
    # A rule checked only against the site (an export naming a peer it lacks) is reported
    # at the resource, with the canonical index; the file's own problems keep their line.
    bad_doc = load_document_text(
        DOC
        + '\n[[resources]]\nkind = "exports"\nname = "web"\n[resources.spec]\npeers = ["nope"]\n'
    )
    with pytest.raises(ConfigInvalid) as err:
        load_with_fleet(text.replace("port = 8080", "port = 0"), bad_doc, base_dir=base)
    found = {(p.path, p.line is not None) for p in err.value.problems}
    web = next(i for i, r in enumerate(bad_doc.resources) if r.name == "web")
    assert (f"fleet.resources[{web}].spec.peers[0]", False) in found
    assert ("sources[0].endpoints[0].port", True) in found


def test_local_tables_come_first_and_keep_their_paths() -> None:
    text = GOOD + '\n[[policies]]\nservice = "web"\nallow_sites = ["gcp-west"]\n'
    doc = load_document_text(DOC)
    config = load_with_fleet(text, doc, base_dir=Path("/etc/isthmus"))
    assert [p.service for p in config.policies] == ["web", "api"]
    warn = load_document_text(
        '[[resources]]\nkind = "policies"\nname = "p"\n[resources.spec]\nallow_sites = ["x"]\n'
    )
    merged = load_with_fleet(text, warn, base_dir=Path("/etc/isthmus"))
    assert (
        "fleet.resources[0].spec.allow_sites[0]",
        "no peer is named 'x': this entry allows nobody (resource policies/p)",
    ) in warnings_with_fleet(merged, warn)


def test_a_fleet_change_is_a_live_reload() -> None:
    text, base = _site()
    doc = load_document_text(DOC)
    running = load_with_fleet(text, doc, base_dir=base)
    # A new version: the policy gone, the export changed, another retry count.
    newer = load_document_text(
        DOC.replace("max_retries = 2", "max_retries = 3")
        .replace('targets = ["aws-east"]', 'targets = ["elsewhere"]')
        .replace(
            'targets = ["*"]\n[resources.spec]\nservice = "api"',
            'targets = ["*"]\n[resources.spec]\nservice = "web"',
        )
    )
    plan = plan_reload(running, load_with_fleet(text, newer, base_dir=base))
    assert plan.problems == () and set(plan.changes) == {"policies", "exports", "service_traffic"}
    # As with a file, a new [[service_traffic]] rule applies live (traffic_plan.py) ...
    plan = plan_reload(load_with_fleet(text, EMPTY, base_dir=base), running)
    assert plan.problems == () and "service_traffic" in plan.changes
    assert plan.traffic.added == ("api.*",)
    # ... and so does a rule's balancer and health check.
    hashed = load_document_text(
        DOC.replace(
            "max_retries = 2 }",
            'max_retries = 2 }\nlb = "ring_hash"\nhash_header = "x-user"\n'
            "health_check = { interval_s = 5.0 }",
        )
    )
    plan = plan_reload(running, load_with_fleet(text, hashed, base_dir=base))
    assert plan.problems == () and plan.changes == ("service_traffic",)
    assert plan.traffic.balancers and plan.traffic.health_checks


def test_diff_names_each_resource() -> None:
    old = load_document_text(DOC)
    new = load_document_text(
        DOC.replace("max_retries = 2", "max_retries = 3").split('[[resources]]\nkind = "exports"')[
            0
        ]
        + '[[resources]]\nkind = "policies"\nname = "new-one"\n'
    )
    assert diff(old, new) == [
        ("removed", "exports", "api"),
        ("added", "policies", "new-one"),
        ("changed", "service_traffic", "api-retries"),
    ]
    assert diff(old, old) == []


def test_fleet_section_is_validated_with_its_paths() -> None:
    from gateway.config.load import load_text

    base = Path("/etc/isthmus")
    with pytest.raises(ConfigInvalid) as err:
        load_text(GOOD + '\n[fleet]\nsource = "consul"\nprefix = "/bad/"\n', base_dir=base)
    assert {p.path for p in err.value.problems} == {"fleet.prefix", "fleet.source"}
    consul = '\n[[sources]]\nkind = "consul"\nname = "c"\n'
    with pytest.raises(ConfigInvalid) as err:
        load_text(
            GOOD + consul + '\n[fleet]\nsource = "consul"\nconsul_source = "x"\n', base_dir=base
        )
    assert [p.path for p in err.value.problems] == ["fleet.consul_source"]
    config = load_text(GOOD + consul + '\n[fleet]\nsource = "consul"\n', base_dir=base)
    assert config.fleet.prefix == "isthmus/fleet"
