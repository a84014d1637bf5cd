"""The hidden ``isthmus worker`` subcommand: parsed, checked, handed to ``run_worker``, and
left out of ``isthmus --help``."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest

from gateway import cli
from gateway.logs import LogSpec, parse_log_spec


def test_help_does_not_list_it(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    assert "run a gateway" in out and "worker" not in out


def test_it_hands_its_arguments_to_run_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[tuple[Any, ...]] = []

    def fake_run_worker(*args: Any) -> int:
        seen.append(args)
        return 0

    import gateway.workers.worker_main as worker_main

    monkeypatch.setattr(worker_main, "run_worker", fake_run_worker)
    a, b = socket.socketpair()
    c, d = socket.socketpair(type=socket.SOCK_DGRAM)
    with a, b, c, d:
        argv = ["worker", "gw.toml", "--index", "3", "--channel-fd", str(a.fileno())]
        argv += ["--handoff-fd", str(c.fileno()), "--log-level", "debug,hpack=info"]
        assert cli.main(argv) == 0
        fds = (a.fileno(), c.fileno())
    spec = LogSpec("debug", (("hpack", "info"),))
    assert seen == [(Path("gw.toml"), 3, *fds, spec)]
    assert parse_log_spec(spec.text()) == spec


def test_a_descriptor_that_is_not_a_socket_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(tmp_path / "f", "w") as f:
        argv = ["worker", "gw.toml", "--index", "0", "--channel-fd", str(f.fileno())]
        assert cli.main([*argv, "--handoff-fd", str(f.fileno())]) == 2
    err = capsys.readouterr().err
    assert "--channel-fd" in err and "not a socket" in err


@pytest.mark.parametrize(
    "bad", [["--index", "64"], ["--index", "x"], ["--channel-fd", "1"], ["--handoff-fd", "-3"]]
)
def test_bad_arguments_exit_2(bad: list[str]) -> None:
    args = {"--index": "0", "--channel-fd": "7", "--handoff-fd": "8"}
    args[bad[0]] = bad[1]
    argv = ["worker", "gw.toml", *(x for kv in args.items() for x in kv)]
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
