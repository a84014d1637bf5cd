"""Which process holds a TCP connection, read from /proc (Linux): the end-to-end tests' way to
see which worker process of a gateway served a request, without trusting the gateway's own
counters for it.

An endpoint in the test process sees each upstream connection's peer address; the gateway
process whose socket has that address as its local end (and the endpoint as its remote end)
is the one that opened it.  ``/proc/net/tcp`` maps the pair to a socket inode, and
``/proc/<pid>/fd`` shows which of the candidate processes holds that inode.  Only processes
the test started (and their children) are ever looked at.
"""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterable
from pathlib import Path

MAX_LINES = 200_000  # /proc/net/tcp of a busy test machine: bounded read


def _address(field: str) -> tuple[str, int]:
    """``0100007F:1F90`` -> ("127.0.0.1", 8080): the kernel prints the IPv4 address as a
    32-bit number in host byte order, the port in hex."""
    ip_hex, port_hex = field.split(":")
    ip = socket.inet_ntoa(struct.pack("=I", int(ip_hex, 16)))
    return ip, int(port_hex, 16)


def socket_inode(local: tuple[str, int], remote: tuple[str, int]) -> int | None:
    """The inode of the IPv4 TCP socket with this local and remote address, if it exists."""
    with open("/proc/net/tcp", encoding="ascii") as f:
        for n, line in enumerate(f):
            if n > MAX_LINES:
                break
            parts = line.split()
            if n == 0 or len(parts) < 10:
                continue
            if _address(parts[1]) == local and _address(parts[2]) == remote:
                return int(parts[9])
    return None


def holder(inode: int, pids: Iterable[int]) -> int | None:
    """Which of ``pids`` has a descriptor on socket ``inode`` (None: none of them)."""
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:  # exited meanwhile
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


def connection_owner(peer: tuple[str, int], me: tuple[str, int], pids: Iterable[int]) -> int | None:
    """The process among ``pids`` that opened the connection we see from ``peer`` to ``me``."""
    inode = socket_inode(peer, me)
    return None if inode is None else holder(inode, pids)


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (every thread's ``children`` list)."""
    found: list[int] = []
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return found
    for task in tasks:
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return found


def alive(pid: int) -> bool:
    """The process exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].split()[0] not in ("Z", "X")
