"""``[site] workers`` and ``[limits] drain_grace_s``: decoded, validated with the field path,
resolved to a worker count, and a change needs a restart."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.config.errors import ConfigInvalid
from gateway.config.load import load_text
from gateway.config.model import MAX_WORKERS, GatewayConfig, resolve_workers
from gateway.reload.plan import plan_reload
from tests.gateway.config.config_kit import GOOD


def _with_site(line: str) -> str:
    return GOOD.replace("[site]\n", f"[site]\n{line}\n", 1)


def _load(text: str) -> GatewayConfig:
    return load_text(text, base_dir=Path("/etc/isthmus"), filename="gw.toml")


def test_default_is_a_worker_per_core_and_ten_seconds_of_drain() -> None:
    config = _load(GOOD)
    assert config.site.workers == "auto" and resolve_workers(config.site.workers) >= 1
    assert config.limits.drain_grace_s == 10.0


@pytest.mark.parametrize("value", [0, 1, 4, MAX_WORKERS])
def test_a_number_is_that_many_workers(value: int) -> None:
    config = _load(_with_site(f"workers = {value}"))
    assert resolve_workers(config.site.workers) == value


def test_auto_is_the_usable_cores() -> None:
    config = _load(_with_site('workers = "auto"'))
    assert config.site.workers == "auto"
    assert resolve_workers("auto") == min(len(os.sched_getaffinity(0)), MAX_WORKERS)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("-1", "must be >= 0, not -1"),
        ("65", f"must be <= {MAX_WORKERS}, not 65"),
        ('"many"', "must be an integer or 'auto', not 'many'"),
        ("true", "must be an integer or 'auto', not True"),
        ("2.5", "must be an integer or 'auto', not 2.5"),
    ],
)
def test_a_bad_value_names_the_field_once(value: str, message: str) -> None:
    with pytest.raises(ConfigInvalid) as info:
        _load(_with_site(f"workers = {value}"))
    [problem] = info.value.problems
    assert problem.path == "site.workers"
    assert problem.message == message


def test_a_bad_drain_grace_names_the_field() -> None:
    with pytest.raises(ConfigInvalid) as info:
        _load(GOOD + "\n[limits]\ndrain_grace_s = -1\n")
    [problem] = info.value.problems
    assert problem.path == "limits.drain_grace_s"


def test_changing_workers_needs_a_restart() -> None:
    old = _load(GOOD)
    new = _load(_with_site("workers = 2"))
    plan = plan_reload(old, new)
    assert [p.path for p in plan.problems] == ["site.workers"]
    assert "restart" in plan.problems[0].message


def test_auto_follows_the_cpu_affinity_not_the_host() -> None:
    usable = os.sched_getaffinity(0)
    one = {min(usable)}
    os.sched_setaffinity(0, one)  # as a container's cpuset would leave it
    try:
        assert resolve_workers("auto") == 1
    finally:
        os.sched_setaffinity(0, usable)
    assert resolve_workers("auto") == min(len(usable), MAX_WORKERS)


def test_a_peer_not_dialed_is_a_warning_with_workers_only() -> None:
    """With workers, a peer this site does not dial is reached only by the links its own
    workers open (some of this site's workers, not all): ``config check`` says so."""
    peer = 'spiffe_id = "spiffe://gcp-west.isthmus.test/isthmus/gateway/gcp-west"\n'
    assert peer in GOOD
    not_dialed = _with_site("workers = 0").replace(peer, peer + "dial = false\n", 1)
    with_workers = _load(_with_site("workers = 2").replace(peer, peer + "dial = false\n", 1))
    assert [path for path, _ in with_workers.warnings()] == ["peers[0].dial"]
    assert "gcp-west" in with_workers.warnings()[0][1]
    assert _load(not_dialed).warnings() == []  # one process: its links serve every request
    assert _load(_with_site("workers = 2")).warnings() == []  # dialed: no warning
    default = _load(GOOD.replace(peer, peer + "dial = false\n", 1))  # "auto": workers
    assert [path for path, _ in default.warnings()] == ["peers[0].dial"]


def test_supervisor_nice_defaults_to_ten_and_is_a_nice_increment() -> None:
    assert _load(GOOD).site.supervisor_nice == 10
    assert _load(_with_site("supervisor_nice = 0")).site.supervisor_nice == 0
    assert _load(_with_site("supervisor_nice = 19")).site.supervisor_nice == 19
    for value, message in (("-1", "must be >= 0, not -1"), ("20", "must be <= 19, not 20")):
        with pytest.raises(ConfigInvalid) as info:
            _load(_with_site(f"supervisor_nice = {value}"))
        [problem] = info.value.problems
        assert (problem.path, problem.message) == ("site.supervisor_nice", message)


def test_changing_supervisor_nice_needs_a_restart() -> None:
    plan = plan_reload(_load(GOOD), _load(_with_site("supervisor_nice = 3")))
    assert [p.path for p in plan.problems] == ["site.supervisor_nice"]
