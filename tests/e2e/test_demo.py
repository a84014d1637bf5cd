"""The README's first command: ``isthmus demo`` brings up a working multi-site overlay.

The embedded default topology is used with its addresses moved (127.0.N.1 -> 127.61.N.1) so
the test never collides with a demo a developer is running.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from importlib import resources
from pathlib import Path

import trio

from tests.e2e.clients import h1_request


def _moved_topology(tmp_path: Path) -> Path:
    text = resources.files("gateway").joinpath("defaults/demo.toml").read_text("utf-8")
    for n in (1, 2, 3):
        text = text.replace(f'"127.0.{n}.1"', f'"127.61.{n}.1"')
    path = tmp_path / "topology.toml"
    path.write_text(text)
    return path


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    ).stdout
    return [int(p) for p in out.split()]


async def test_demo_serves_cross_site_traffic_and_stops_everything_on_sigint(
    tmp_path: Path,
) -> None:
    argv = [
        sys.executable, "-m", "gateway.cli", "demo",
        "--dir", str(tmp_path / "state"), "--topology", str(_moved_topology(tmp_path)),
    ]  # fmt: skip
    log = tmp_path / "demo.out"
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        with trio.fail_after(60):
            while b"federated" not in log.read_bytes():
                assert proc.returncode is None, log.read_text()
                await trio.sleep(0.2)
        text = log.read_text()
        assert "curl -x http://127.61.1.1:15080 http://whoami.default.isthmus/" in text
        # What the guide says to try works: a pinned cross-site call through the proxy.
        reply = await h1_request(
            "127.61.1.1", 15080, authority="x", path="http://whoami.default.gcp-west.isthmus/"
        )
        assert reply.status == 200 and reply.json()["site"] == "gcp-west"
        children = _children(proc.pid)
        assert len(children) >= 3 + 7  # three gateways and the seven example services
        proc.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            await proc.wait()
        assert proc.returncode == 0
        assert "stopped: every process the demo started has been stopped." in log.read_text()
        assert not [pid for pid in children if _alive(pid)]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
