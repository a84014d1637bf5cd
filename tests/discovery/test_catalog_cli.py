"""``isthmus catalog CONFIG``: runs the config's real sources and prints what it learned."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from gateway.cli import main

HEAD = """
[site]
name = "aws-east"
trust_domain = "aws-east.isthmus.test"

[identity]
svid = "svid.pem"
key = "svid_key.pem"
bundles = [{ trust_domain = "aws-east.isthmus.test", path = "bundle.pem" }]
"""

SOURCES = """
[[sources]]
kind = "static"
name = "pinned"

[[sources.endpoints]]
service = "api"
namespace = "payments"
address = "127.0.0.1"
port = 8080
weight = 7

[[sources]]
kind = "static"
name = "local"

[[sources.endpoints]]
service = "api"
namespace = "payments"
address = "127.0.0.1"
port = 8080

[[sources.endpoints]]
service = "db"
address = "::1"
port = 5432
protocol = "tcp"
healthy = false
spiffe_id = "spiffe://aws-east.isthmus.test/db"
"""

# A Consul agent that is not there: nothing listens on this loopback port.
DEAD_CONSUL = """
[[sources]]
kind = "consul"
name = "consul"
address = "http://127.0.0.1:9"
stale_grace_s = 30
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(HEAD + text)
    return path


def test_json_lists_each_endpoint_once_with_sources_health_and_freshness(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write(tmp_path, SOURCES)
    started = time.monotonic()
    assert main(["catalog", str(config), "--settle", "0.1", "--json"]) == 0
    ran_s = time.monotonic() - started  # measured to bound the age below, not asserted on
    out = json.loads(capsys.readouterr().out)
    api, db = out["endpoints"]
    assert (api["service"], api["namespace"], api["address"], api["port"]) == (
        "api",
        "payments",
        "127.0.0.1",
        8080,
    )
    assert [s["source"] for s in api["sources"]] == ["pinned", "local"]
    assert api["weight"] == 7  # the first [[sources]] wins
    assert api["healthy"] and api["routable"] and not api["stale"]
    # An age, not a timestamp: the endpoint was learned during this run of the command.
    # (Rounded for display, hence the 0.01.)
    assert 0 <= api["age_s"] <= ran_s + 0.01
    assert db["protocol"] == "tcp" and not db["healthy"] and not db["routable"]
    assert db["spiffe_id"] == "spiffe://aws-east.isthmus.test/db"
    assert {s["name"] for s in out["sources"]} == {"pinned", "local"}
    assert not any(s["stale"] for s in out["sources"])


def test_table_shows_an_unreachable_consul_as_stale(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, SOURCES + DEAD_CONSUL)
    assert main(["catalog", str(path), "--settle", "0.5"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].startswith("catalog version") and "2 endpoints" in lines[0]
    api = next(line for line in lines if line.startswith("api.payments"))
    assert "127.0.0.1:8080" in api and "healthy" in api and "pinned,local" in api
    assert api.rstrip().endswith("fresh")
    db = next(line for line in lines if line.startswith("db.default"))
    assert "[::1]:5432" in db and "unhealthy" in db
    consul = next(line for line in lines if line.startswith("consul "))
    assert "stale for" in consul and "grace left" in consul


def test_bad_config_exits_2_with_the_path_of_the_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, SOURCES.replace("port = 5432", "port = 99999"))
    assert main(["catalog", str(path), "--settle", "0"]) == 2
    assert "sources[1].endpoints[1].port" in capsys.readouterr().err
    assert main(["catalog", str(tmp_path / "missing.toml")]) == 2
    assert main(["catalog", str(write(tmp_path, SOURCES)), "--settle", "-1"]) == 2
    assert main(["catalog", str(write(tmp_path, SOURCES)), "--settle", "nan"]) == 2


def test_the_installed_command_runs(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("isthmus")
    if not script.exists():
        pytest.skip(f"console script not installed next to {sys.executable}")
    done = subprocess.run(
        [str(script), "catalog", str(write(tmp_path, SOURCES)), "--settle", "0", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["endpoints"]) == 2


def test_a_source_that_cannot_use_its_config_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = DEAD_CONSUL.replace(
        'address = "http://127.0.0.1:9"',
        f'address = "https://127.0.0.1:9"\nca_file = "{tmp_path / "missing-ca.pem"}"',
    )
    assert main(["catalog", str(write(tmp_path, SOURCES + broken)), "--settle", "0"]) == 2
    err = capsys.readouterr().err
    assert "consul" in err and ("missing-ca.pem" in err or "No such file" in err)
