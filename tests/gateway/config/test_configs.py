"""The example configs in configs/ pass the check and run as they are."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import trio

from foundation.spiffe_id import SpiffeId, TrustDomain
from gateway.config.load import load_file
from gateway.demo.admin_client import wait_for
from gateway.demo.runner import gateway_argv, start_child, stop_child
from overlay.identity.ca import init_ca, issue_svid

CONFIGS = sorted((Path(__file__).resolve().parents[3] / "configs").glob("*.toml"))


def test_there_are_examples() -> None:
    assert len(CONFIGS) >= 3


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_example_config_is_valid(path: Path) -> None:
    config = load_file(path)
    assert config.site.name
    assert config.identity.svid.is_relative_to(path.parent)


async def test_single_site_example_runs(tmp_path: Path) -> None:
    """configs/single-site.toml on a copy, moved to its own address: its catalog."""
    config_path = tmp_path / "single-site.toml"
    shutil.copy(CONFIGS[0].parent / "single-site.toml", config_path)
    td = TrustDomain("example.isthmus.test")
    init_ca(tmp_path / "ca", td)
    issue_svid(
        tmp_path / "ca",
        SpiffeId.parse("spiffe://example.isthmus.test/isthmus/gateway/example"),
        tmp_path / "identity",
    )
    # Use a loopback address of its own so a developer's running demo cannot collide.
    text = config_path.read_text().replace('"127.0.30.1"', '"127.0.77.1"')
    config_path.write_text(text)
    child = await start_child("example", gateway_argv(config_path), tmp_path / "gateway.log")
    try:
        doc = await wait_for(
            "http://127.0.77.1:15000", "/catalog", lambda d: len(d["endpoints"]) == 2, within_s=30
        )
        services = sorted(f"{e['service']}.{e['namespace']}" for e in doc["endpoints"])
        assert services == ["api.payments", "ledger.payments"]
    finally:
        with trio.CancelScope(shield=True):
            await stop_child(child)
    assert child.process.returncode == 0  # SIGTERM is a clean shutdown
