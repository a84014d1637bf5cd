"""The README's first command: ``isthmus demo`` brings up a working multi-site overlay.

The embedded default topology is used with its addresses moved (``--base-address``, a
127.<b>.1.1 derived from the test's pid as in the harness) so the test never collides with a
demo a developer is running, nor with another test run.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import trio

from gateway.demo.admin_client import admin_get, wait_for
from tests.e2e.clients import h1_request
from tests.e2e.harness import linked, loopback_block


def _demo_argv(state: Path, base: str, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "gateway.cli", "demo",
        "--dir", str(state), "--base-address", base, *extra,
    ]  # fmt: skip


def _read(path: Path) -> str:
    return path.read_text("utf-8", "replace")


async def _wait_for_text(log: Path, text: str, proc: trio.Process, *, within_s: float) -> str:
    """Poll the demo's output until ``text`` appears; the demo must still be running."""
    with trio.fail_after(within_s):
        while text not in _read(log):
            assert proc.returncode is None, _read(log)
            await trio.sleep(0.2)
    return _read(log)


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
    b = loopback_block()
    argv = _demo_argv(tmp_path / "state", f"127.{b}.1.1")
    log = tmp_path / "demo.out"
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(argv, stdout=out, stderr=subprocess.STDOUT)
    try:
        with trio.fail_after(60):
            while b"federated" not in log.read_bytes():
                assert proc.returncode is None, log.read_text()
                await trio.sleep(0.2)
        text = log.read_text()
        assert f"curl -x http://127.{b}.1.1:15080 http://whoami.default.isthmus/" in text
        # What the guide says to try works: a pinned cross-site call through the proxy.
        reply = await h1_request(
            f"127.{b}.1.1", 15080, authority="x", path="http://whoami.default.gcp-west.isthmus/"
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
        await _stop(proc)


async def test_demo_survives_a_killed_site_and_its_printed_restart_command_works(
    tmp_path: Path,
) -> None:
    """Kill the site PID the guide prints: the demo reports it and keeps running; the printed
    restart command brings the site back into the overlay.  On the way: a healthy start logs
    no "cannot link" warning, and a second demo on the same addresses fails at once."""
    b = loopback_block()
    base = f"127.{b}.1.1"
    state = tmp_path / "state"
    log = tmp_path / "demo.out"
    with log.open("wb") as out:
        proc = await trio.lowlevel.open_process(
            _demo_argv(state, base, "--admin-port", "15100", "--http-port", "15180"),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    restarted: trio.Process | None = None
    try:
        text = await _wait_for_text(log, "federated", proc, within_s=60)
        aws_admin = f"http://{base}:15100"
        assert f"admin {aws_admin}/" in text  # the flags moved the admin listener

        # Peers starting together is normal: no "cannot link" warning on a healthy start.
        for site in ("aws-east", "gcp-west", "onprem"):
            gateway_log = (state / site / "gateway.log").read_text()
            assert not [
                line
                for line in gateway_log.splitlines()
                if "WARNING" in line and "cannot link" in line
            ], gateway_log

        # A second demo on the same addresses fails at once, naming the busy address, and
        # never claims success.
        with trio.fail_after(60):  # hang guard: without the check it ran on, "federated"
            second = await trio.run_process(
                _demo_argv(
                    tmp_path / "second", base, "--admin-port", "15100", "--http-port", "15180",
                    "--duration", "3",
                ),
                capture_stdout=True,
                capture_stderr=True,
                check=False,
            )  # fmt: skip
        said = (second.stdout + second.stderr).decode()
        assert second.returncode != 0, said
        assert re.search(rf"address 127\.{b}\.1\.1:\d+ is already in use", said), said
        assert "federated" not in said and "Traceback" not in said, said
        assert not (tmp_path / "second").exists()  # nothing was built or started

        # Kill gcp-west's gateway by the PID the guide prints.
        found = re.search(r"gcp-west\s+gateway pid (\d+)", text)
        assert found, text
        victim = int(found.group(1))
        os.kill(victim, signal.SIGKILL)
        report = f"site gcp-west (pid {victim}) exited with signal SIGKILL; restart it with:"
        text = await _wait_for_text(log, report, proc, within_s=30)
        # api.payments lives only in gcp-west: its route leaves once the link is down.
        await wait_for(
            aws_admin, "/routes", lambda d: "api.payments.isthmus" not in d["routes"], within_s=30
        )
        assert proc.returncode is None, text  # the demo keeps running

        # Run the restart command exactly as printed; the site rejoins the overlay.
        command = text.split(report, 1)[1].strip().splitlines()[0]
        with (tmp_path / "restarted.log").open("wb") as restarted_out:
            restarted = await trio.lowlevel.open_process(
                shlex.split(command),
                stdout=restarted_out,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,  # as from another terminal: the command needs no particular cwd
            )
        # What the user waits for: the demo says the site is back once every site routes to
        # every service again (with worker processes, /routes lists a site only once every
        # worker routes there: before, a worker that had not applied the fresh import yet
        # answered 503 while the supervisor's /routes already listed gcp-west).
        back = "site gcp-west is back: every site routes to every service again."
        text = await _wait_for_text(log, back, proc, within_s=120)
        assert text.index(back) > text.index(report), text  # said after the exit, not before
        routes = await admin_get(aws_admin, "/routes")
        assert routes["routes"].get("api.payments.isthmus") == ["gcp-west"], routes
        links = await admin_get(aws_admin, "/links")
        assert links["gcp-west"]["links_established"] >= 2, links  # a new link, not the old
        # The demo's sites run a worker per core: each worker links to gcp-west again too.
        assert linked(links, "gcp-west"), links
        reply = await h1_request(base, 15180, authority="x", path="http://api.payments.isthmus/")
        assert reply.status == 200 and reply.json()["site"] == "gcp-west", (
            reply.status,
            reply.body,
        )
        assert proc.returncode is None, log.read_text()

        proc.send_signal(signal.SIGINT)
        with trio.fail_after(30):
            await proc.wait()
        assert proc.returncode == 0, log.read_text()
    finally:
        for p in (restarted, proc):
            if p is not None:
                await _stop(p)


async def _stop(proc: trio.Process) -> None:
    """Stop a demo (or a site it printed the command of) the way a user does: SIGINT, so it
    stops the gateways and services it started; SIGKILL only if it has not ended in 30 s (a
    SIGKILLed demo leaves its sites running: a failed assertion must not leak them into the
    next tests, which may get the same loopback addresses)."""
    with trio.CancelScope(shield=True):
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            with trio.move_on_after(30):
                await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
