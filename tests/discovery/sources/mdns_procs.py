"""Harness processes for mDNS between network namespaces, shared by the netns tests and
``scripts/bench_mdns.py``.

Each process (``mdns_browse``, ``mdns_publish``, ``mdns_announce_run``, or the plain zeroconf
browser of the benchmark) prints one JSON object per line, stamped with ``time.monotonic()``
(system-wide, so lines of different processes can be put in order); a thread collects them.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.netns import Host

ROOT = Path(__file__).resolve().parents[3]
Line = dict[str, Any]


class Proc:
    """A harness process in a namespace whose stdout JSON lines are collected by a thread."""

    def __init__(self, host: Host, module: str, arg: str) -> None:
        self.popen = subprocess.Popen(
            host.argv([sys.executable, "-m", module, arg]),
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[Line] = queue.Queue()
        self.seen: list[Line] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for raw in self.popen.stdout:
            self.lines.put(json.loads(raw))

    def send(self, obj: Line) -> None:
        assert self.popen.stdin is not None
        self.popen.stdin.write(json.dumps(obj) + "\n")
        self.popen.stdin.flush()

    def wait_for(self, pred: Callable[[Line], bool], timeout: float, what: str) -> Line:
        deadline = time.monotonic() + timeout
        for line in self.seen:
            if pred(line):
                return line
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                break
            self.seen.append(line)
            if pred(line):
                return line
        raise AssertionError(f"no {what} within {timeout} s; saw {self.seen[-10:]}")

    def drain(self, seconds: float) -> None:
        """Collect whatever arrives during ``seconds``."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                self.seen.append(self.lines.get(timeout=left))
            except queue.Empty:
                return

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
        self.popen.wait(timeout=10)


def browser(procs: list[Proc], host: Host, **config: Any) -> Proc:
    config.setdefault("interfaces", [host.address])
    p = Proc(host, "tests.discovery.sources.mdns_browse", json.dumps(config))
    procs.append(p)
    p.wait_for(lambda e: e["ev"] == "ready", 10, "ready")
    return p


def publisher(procs: list[Proc], host: Host) -> Proc:
    p = Proc(host, "tests.discovery.sources.mdns_publish", host.address)
    procs.append(p)
    p.wait_for(lambda e: e.get("ok") == "started", 10, "publisher start")
    return p


def register(pub: Proc, label: str, port: int, **extra: Any) -> None:
    pub.send({"op": "register", "label": label, "port": port, **extra})
    pub.wait_for(lambda e: e.get("ok") == "register" and e["label"] == label, 10, "register")


def added(port: int) -> Callable[[Line], bool]:
    return lambda e: e["ev"] == "added" and e["port"] == port


def removed(port: int) -> Callable[[Line], bool]:
    return lambda e: e["ev"] == "removed" and e["port"] == port
