"""Throw-away network namespaces for tests that need separate hosts on one link.

``with lan(3) as net:`` builds

    bridge namespace  <name>-br : br0 (bridge, multicast snooping off so mDNS floods)
        p1 ── veth ── eth0 in <name>-h1   198.18.0.1/24
        p2 ── veth ── eth0 in <name>-h2   198.18.0.2/24
        ...

with loopback up and a 224.0.0.0/4 route on eth0 in each host namespace, and removes every
namespace on exit -- also when the body raises, or when building fails half-way.  Names carry
the process id and a counter, so concurrent test runs and repeated tests never collide; veth
interfaces are created directly inside the namespaces, so nothing appears in the root namespace.
Addresses come from 198.18.0.0/15 (RFC 2544 benchmarking range), as the project requires.

Run a program "on" a host with ``net.hosts[0].argv([...])`` (``ip netns exec``), and cut or
restore a host's link with ``net.set_link(host, up=False)``.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

_counter = itertools.count(1)
_skip_reason: str | bool | None = False  # False = not probed yet


def _ip(*args: str) -> None:
    proc = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)} failed: {proc.stderr.strip()}")


def _unique(tag: str) -> str:
    return f"isth{os.getpid()}-{next(_counter)}{tag}"


def netns_skip_reason() -> str | None:
    """Why this machine cannot create network namespaces (None if it can), probed once."""
    global _skip_reason
    if _skip_reason is not False:
        return _skip_reason if isinstance(_skip_reason, str) else None
    reason: str | None = None
    if shutil.which("ip") is None:
        reason = "the `ip` command (iproute2) is not installed"
    else:
        probe = _unique("-probe")
        try:
            _ip("netns", "add", probe)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            reason = f"cannot create a network namespace here (needs root/CAP_SYS_ADMIN): {exc}"
        else:
            _ip("netns", "del", probe)
    _skip_reason = reason if reason is not None else None
    return reason


@dataclass(frozen=True)
class Host:
    namespace: str
    address: str  # IPv4 address on eth0
    port_name: str  # the veth end in the bridge namespace

    def argv(self, command: list[str]) -> list[str]:
        """``command`` run inside this host's namespace."""
        return ["ip", "netns", "exec", self.namespace, *command]


@dataclass(frozen=True)
class Lan:
    bridge_namespace: str
    hosts: tuple[Host, ...]

    def set_link(self, host: Host, *, up: bool) -> None:
        """Cut (or restore) a host's cable at the bridge."""
        _ip("-n", self.bridge_namespace, "link", "set", host.port_name, "up" if up else "down")


@contextlib.contextmanager
def lan(hosts: int = 2, *, subnet: str = "198.18.0") -> Iterator[Lan]:
    """Create ``hosts`` namespaces on one bridged link; always remove them afterwards."""
    if not 1 <= hosts <= 250:
        raise ValueError("hosts must be in 1..250")
    base = _unique("")
    created: list[str] = []
    try:
        bridge = f"{base}-br"
        _ip("netns", "add", bridge)
        created.append(bridge)
        _ip("-n", bridge, "link", "set", "lo", "up")
        _ip("-n", bridge, "link", "add", "br0", "type", "bridge", "mcast_snooping", "0")
        _ip("-n", bridge, "link", "set", "br0", "up")
        made: list[Host] = []
        for i in range(1, hosts + 1):
            ns, port = f"{base}-h{i}", f"p{i}"
            _ip("netns", "add", ns)
            created.append(ns)
            _ip(
                "-n",
                bridge,
                "link",
                "add",
                port,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            _ip("-n", bridge, "link", "set", port, "master", "br0", "up")
            address = f"{subnet}.{i}"
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "route", "add", "224.0.0.0/4", "dev", "eth0")
            made.append(Host(ns, address, port))
        yield Lan(bridge, tuple(made))
    finally:
        for ns in reversed(created):
            with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
                _ip("netns", "del", ns)
