"""Benchmark floor: a plain zeroconf ``ServiceBrowser`` (no Isthmus code) printing JSON lines.

Usage (inside a namespace)::

    python -m tests.discovery.sources.mdns_plain_browse ADDRESS [SERVICE_TYPE]

Prints ``{"ev": "ready"}`` once browsing, then ``{"ev": "added" | "removed", "label": ...}``
for each instance (``label`` is the instance name's first label), each stamped with
``t`` = ``time.monotonic()``, as ``mdns_browse`` does for the Isthmus source.  It is what
``scripts/bench_mdns.py`` compares the source's reaction times with, measured in the same run.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from typing import Any

from zeroconf import ServiceBrowser, ServiceStateChange, Zeroconf

DEFAULT_TYPE = "_isthmus._tcp.local."
_lock = threading.Lock()


def emit(obj: dict[str, Any]) -> None:
    obj["t"] = time.monotonic()
    with _lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def on_change(
    zeroconf: Zeroconf, service_type: str, name: str, state_change: ServiceStateChange
) -> None:
    if state_change in (ServiceStateChange.Added, ServiceStateChange.Removed):
        ev = "added" if state_change is ServiceStateChange.Added else "removed"
        emit({"ev": ev, "label": name.split(".", 1)[0]})


def main(address: str, service_type: str) -> None:
    zc = Zeroconf(interfaces=[address])
    browser = ServiceBrowser(zc, [service_type], handlers=[on_change])
    emit({"ev": "ready"})
    try:
        sys.stdin.read()  # until the harness closes stdin or kills us
    finally:
        browser.cancel()
        zc.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else DEFAULT_TYPE)
