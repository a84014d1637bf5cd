"""Test harness: run ``serve_mdns_announcer`` until a ``stop`` line arrives on stdin.

Usage:
``python -m tests.discovery.sources.mdns_announce_run '{"interfaces": [...], "services": [...]}'``
where each service is an object of :class:`AnnouncedService` fields (``spiffe_id`` as text).
Prints ``{"ok": "announced", "names": [...]}`` once announced and
``{"ok": "stopped", "t_start": ...}`` after the announcer has exited (goodbyes sent).
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import trio

from discovery.sources.mdns_announce import AnnouncedService, serve_mdns_announcer
from foundation.spiffe_id import SpiffeId


def reply(obj: dict[str, Any]) -> None:
    obj["t"] = time.monotonic()
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def service(spec: dict[str, Any]) -> AnnouncedService:
    if spec.get("spiffe_id"):
        spec["spiffe_id"] = SpiffeId.parse(spec["spiffe_id"])
    return AnnouncedService(**spec)


async def main(spec: dict[str, Any]) -> None:
    services = [service(s) for s in spec["services"]]
    async with trio.open_nursery() as nursery:
        names = await nursery.start(
            lambda task_status: serve_mdns_announcer(
                services, interfaces=spec.get("interfaces", ()), task_status=task_status
            )
        )
        reply({"ok": "announced", "names": list(names)})
        await trio.to_thread.run_sync(sys.stdin.readline)
        t0 = time.monotonic()
        nursery.cancel_scope.cancel()
    reply({"ok": "stopped", "t_start": t0})


if __name__ == "__main__":
    trio.run(main, json.loads(sys.argv[1]))
