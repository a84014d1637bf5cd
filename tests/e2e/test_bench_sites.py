"""scripts/bench_sites.py end to end on three real gateways: the figures it reports come from
a converged full mesh (every link up, every peer's services imported, one change spread).

Not a timed test: only the script's own generous bounds apply, and nothing here looks at how
long anything took.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trio

from scripts.bench_sites import main, parse_args
from tests.e2e.harness import loopback_block

pytestmark = pytest.mark.e2e


async def test_three_sites_report_a_converged_mesh(tmp_path: Path) -> None:
    out = tmp_path / "sites.json"
    argv = ["--sites", "3", "--rounds", "1", "--idle", "0.5", "--settle", "0", "--services", "1"]
    args = parse_args([*argv, "--block", str(loopback_block()), "--json", str(out)])
    with trio.fail_after(240):  # hang guard only
        await main(args)
    doc = json.loads(out.read_text("utf-8"))
    (row,) = doc["sizes"]
    assert "error" not in row
    assert row["sites"] == 3 and row["peers_max"] == 2
    assert row["change_max_s"] is not None  # the added service reached both peers
    processes = row["processes"]
    assert [p["site"] for p in processes] == ["s000", "s001", "s002"]
    for p in processes:
        assert p["peers_up"] == 2
        # Both sides dial: one link per peer at least, a dialed and an accepted one once both
        # dials went through (the second may still be on its way with --settle 0).
        assert 2 <= p["links"] <= 4
        assert p["streams"] > 0  # the federation streams stay open at rest
        assert p["rss"] > 0 and p["fds"] > 0
    assert row["idle_cpu_cores"] >= 0
