"""``isthmus apply``, ``diff`` and ``rollback`` as processes against the Consul test server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

from gateway.fleet.document import load_document_text
from tests.consul_api.server import open_consul_api_server
from tests.gateway.config.config_kit import GOOD

POLICY = '[[resources]]\nkind = "policies"\nname = "p"\n[resources.spec]\nservice = "{}"\n'
EXPORT = '\n[[resources]]\nkind = "exports"\nname = "e"\n[resources.spec]\npeers = ["{}"]\n'


async def cli(*args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "gateway.cli", *args]
    return await trio.to_thread.run_sync(
        lambda: subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    )


async def test_apply_diff_rollback(tmp_path: Path) -> None:
    doc = tmp_path / "fleet.toml"
    site = tmp_path / "site.toml"
    site.write_text(GOOD, "utf-8")
    async with open_consul_api_server() as consul:
        url = ("--consul", consul.url)
        doc.write_text(POLICY.format("api"), "utf-8")
        first = await cli("apply", str(doc), *url)
        assert first.returncode == 0, first.stderr
        v1 = load_document_text(POLICY.format("api")).version
        assert first.stdout.startswith(f"applied version {v1} (was none)")
        assert "+ policies/p (added)" in first.stdout
        again = await cli("apply", str(doc), *url)
        assert again.returncode == 0 and again.stdout.startswith(f"unchanged; version {v1}")

        doc.write_text(POLICY.format("web") + EXPORT.format("gcp-west"), "utf-8")
        shown = await cli("diff", str(doc), *url)
        assert shown.returncode == 0, shown.stderr
        v2 = load_document_text(doc.read_text("utf-8")).version
        assert shown.stdout.splitlines() == [
            f"version {v1} -> {v2}",
            "  + exports/e (added)",
            "  ~ policies/p (changed)",
        ]
        # Valid on its own, but not for this site: --check-site refuses it, nothing written.
        doc.write_text(POLICY.format("web") + EXPORT.format("nowhere"), "utf-8")
        bad = await cli("apply", str(doc), "--check-site", str(site), *url)
        assert bad.returncode == 2
        assert (
            "fleet.resources[0].spec.peers[0]: no peer is named 'nowhere' (resource exports/e)"
            in bad.stderr
        )
        assert (await cli("diff", str(doc), *url)).stdout.startswith(f"version {v1} ->")

        doc.write_text(POLICY.format("web") + EXPORT.format("gcp-west"), "utf-8")
        second = await cli("apply", str(doc), "--check-site", str(site), *url)
        assert second.returncode == 0, second.stderr
        listed = await cli("rollback", *url)
        assert listed.stdout.split() == [v1, v2]
        back = await cli("rollback", v1, *url)
        assert back.returncode == 0 and back.stdout.startswith(f"rolled back to version {v1}")
        assert "- exports/e (removed)" in back.stdout
        unknown = await cli("rollback", "0123456789ab", *url)
        assert unknown.returncode == 2 and "not in the history" in unknown.stderr

        await consul.go_away()
        down = await cli("diff", str(doc), *url)
        assert down.returncode == 1 and "authority" in down.stderr
