"""Every example config set in configs/ carries traffic as shipped, by the README's commands.

The test reads the README's "Example configs" section and runs each set's commands as written
-- the development CA, the example services, the gateways, the curl calls -- in a scratch
directory holding a copy of configs/ (``.venv/bin/isthmus`` and ``.venv/bin/python`` become
this interpreter).  So a command in the README that does not work fails here.  The examples
listen on their documented loopback addresses; when one is busy (a developer's own run of an
example), the test skips, naming it.  Each call runs once with curl (skipped where curl is
missing) and once in Python with the curl line's own trust, client certificate and Host
(``ssl``), so the TLS example is verified either way.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio

from gateway.demo.preflight import Bind, PortUnavailable, check_binds
from gateway.demo.runner import Child, start_child, stop_child
from tests.e2e.clients import h1_request, tls_client_context

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.toml"))


@dataclass
class ExampleSet:
    """One "####" subsection of the README's "Example configs": its commands, in order."""

    title: str
    commands: list[str] = field(default_factory=list)

    @property
    def configs(self) -> list[str]:
        return re.findall(r"configs/[\w-]+\.toml", self.title)


def readme_examples() -> list[ExampleSet]:
    text = (ROOT / "README.md").read_text("utf-8")
    section = text.split("### Example configs", 1)[1].split("\n## ", 1)[0]
    sets: list[ExampleSet] = []
    pending = ""
    for line in section.splitlines():
        if line.startswith("#### "):
            sets.append(ExampleSet(line[5:]))
        elif line.startswith("    ") and sets:
            pending += line.strip()
            if pending.endswith("\\"):
                pending = pending[:-1] + " "
                continue
            sets[-1].commands.append(" ".join(pending.split()))
            pending = ""
    return sets


def test_the_readme_covers_every_shipped_example() -> None:
    covered = {c for s in readme_examples() for c in s.configs}
    assert covered == {f"configs/{p.name}" for p in CONFIGS}


def _argv(command: str) -> list[str]:
    """The README's command as this test runs it: the venv's programs are this interpreter."""
    words = shlex.split(command.split(" #", 1)[0].removesuffix("&").strip())
    if words[0] == ".venv/bin/isthmus":
        return [sys.executable, "-m", "gateway.cli", *words[1:]]
    if words[0] == ".venv/bin/python":
        return [sys.executable, *words[1:]]
    return words


def _binds(example: ExampleSet) -> list[Bind]:
    """Every address the set's services and gateways listen on (from the commands/configs)."""
    import tomllib

    binds: list[Bind] = []
    for command in example.commands:
        found = re.search(r"--host (\S+) --port (\d+)", command)
        if "gateway.demo.services" in command and found:
            binds.append(Bind(found.group(1), int(found.group(2)), command))
    for config in example.configs:
        doc = tomllib.loads((ROOT / config).read_text("utf-8"))
        binds += [Bind(lst["address"], lst["port"], config) for lst in doc["listeners"]]
    return binds


async def _call(command: str, scratch: Path, client: str) -> dict[str, object]:
    """Run one curl line with curl, or the same request in Python; the JSON answer."""
    argv = _argv(command)
    if client == "curl":
        argv[1:1] = ["-sS", "--fail", "--max-time", "10"]
        env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
        done = await trio.run_process(argv, cwd=scratch, env=env, capture_stdout=True, check=False)
        assert done.returncode == 0, (command, done.stdout)
        return dict(json.loads(done.stdout))
    opts = dict(zip(argv[1:-1:2], argv[2::2], strict=False))
    url = argv[-1]
    if "-x" in opts:
        proxy = re.fullmatch(r"http://([\d.]+):(\d+)", opts["-x"])
        assert proxy, command
        reply = await h1_request(proxy[1], int(proxy[2]), authority="x", path=url)
    else:
        target = re.fullmatch(r"https://([\d.]+):(\d+)/", url)
        assert target and opts["-H"].startswith("Host: "), command
        tls = tls_client_context(
            scratch / opts["--cacert"], svid=scratch / opts["--cert"], key=scratch / opts["--key"]
        )
        host = opts["-H"].removeprefix("Host: ")
        reply = await h1_request(target[1], int(target[2]), authority=host, path="/", tls=tls)
    assert reply.status == 200, (command, reply)
    return dict(reply.json())


@pytest.mark.parametrize("client", ["curl", "python"])
@pytest.mark.parametrize("example", readme_examples(), ids=lambda s: "+".join(s.configs))
async def test_example_set_carries_traffic_by_the_readme_commands(
    example: ExampleSet, client: str, tmp_path: Path
) -> None:
    if client == "curl" and shutil.which("curl") is None:
        pytest.skip("curl is not installed; the python variant makes the same calls")
    try:
        check_binds(_binds(example))
    except PortUnavailable as exc:
        pytest.skip(f"the example's documented address is busy: {exc}")
    scratch = tmp_path / "checkout"
    shutil.copytree(ROOT / "configs", scratch / "configs")
    children: list[Child] = []
    try:
        for i, command in enumerate(example.commands):
            if command.startswith("curl"):
                expected = re.search(r'"site": "(\w+)"', command)
                assert expected, f"say which site answers: {command}"
                with trio.fail_after(60):  # hang guard: links come up within seconds
                    while True:
                        try:
                            answer = await _call(command, scratch, client)
                            break
                        except (AssertionError, OSError):  # not up yet
                            if any(c.process.returncode is not None for c in children):
                                raise
                            await trio.sleep(0.5)
                assert answer["site"] == expected[1], (command, answer)
            elif command.endswith("&"):
                log = tmp_path / f"process-{i}.log"
                children.append(await start_child(command, _argv(command), log, cwd=scratch))
            else:
                done = await trio.run_process(
                    _argv(command),
                    cwd=scratch,
                    capture_stdout=True,
                    capture_stderr=True,
                    check=False,
                )
                assert done.returncode == 0, (command, done.stdout, done.stderr)
        assert all(c.process.returncode is None for c in children), [
            c.log_path.read_text() for c in children
        ]
    finally:
        with trio.CancelScope(shield=True):
            for child in children:
                await stop_child(child)
