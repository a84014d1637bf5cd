"""``isthmus run`` as a real process: what an operator sees when start-up cannot proceed."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import trio

from foundation.spiffe_id import SpiffeId, TrustDomain
from overlay.identity.ca import init_ca, issue_svid

#: A loopback address of this test's own (not 127.0.0.1, where a developer's demo may run).
HOST = f"127.{80 + os.getpid() % 100}.9.1"
HANG_GUARD_S = 60.0


def write_config(tmp_path: Path, listeners: str) -> Path:
    """A minimal valid config with development-CA identity files and ``listeners``."""
    td = TrustDomain("run.isthmus.test")
    init_ca(tmp_path / "ca", td)
    issue_svid(
        tmp_path / "ca", SpiffeId.parse("spiffe://run.isthmus.test/gateway/g"), tmp_path / "id"
    )
    path = tmp_path / "gw.toml"
    path.write_text(
        '[site]\nname = "g"\ntrust_domain = "run.isthmus.test"\n'
        '[identity]\nsvid = "id/svid.pem"\nkey = "id/svid_key.pem"\n'
        'bundles = [{ trust_domain = "run.isthmus.test", path = "id/bundle.pem" }]\n' + listeners
    )
    return path


async def run_gateway(config: Path, *extra: str) -> subprocess.CompletedProcess[bytes]:
    argv = [sys.executable, "-m", "gateway.cli", "run", str(config), *extra]
    with trio.fail_after(HANG_GUARD_S):
        return await trio.run_process(argv, capture_stdout=True, capture_stderr=True, check=False)


async def test_a_busy_listener_address_is_named_without_a_traceback(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(
            tmp_path,
            f'[[listeners]]\nname = "front"\nkind = "http"\naddress = "{HOST}"\nport = {port}\n',
        )
        done = await run_gateway(config)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert f"address {HOST}:{port} is already in use (listener front)" in err, err
    assert "Traceback" not in err, err


async def test_a_busy_service_port_is_named(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind((HOST, 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(
            tmp_path,
            f'[[service_ports]]\nname = "ledger"\naddress = "{HOST}"\nport = {port}\n'
            'target = "ledger.payments.isthmus"\n',
        )
        done = await run_gateway(config)
    err = done.stderr.decode()
    assert done.returncode == 1, err
    assert f"address {HOST}:{port} is already in use (service port ledger)" in err, err
    assert "Traceback" not in err, err


async def test_a_bad_log_spec_is_refused_with_the_reason(tmp_path: Path) -> None:
    config = write_config(tmp_path, "")
    done = await run_gateway(config, "--log-level", "debug,hpack=loud")
    err = done.stderr.decode()
    assert done.returncode == 2, err
    assert "unknown log level 'loud'" in err, err
