"""Test harness: run ``serve_mdns_source`` and print each event as one JSON line.

Usage (normally inside a namespace via ``ip netns exec``)::

    python -m tests.discovery.sources.mdns_browse '{"interfaces": ["198.18.0.2"], ...}'

The JSON object holds MdnsSourceConfig fields (``name`` defaults to ``mdns-test``).  Besides
events it prints ``{"ev": "ready"}`` once the source has started and ``{"ev": "error", ...}``
for each warning the source logs, so tests can assert on typed errors.  Every line carries
``t`` = ``time.monotonic()`` (system-wide, so comparable across processes).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from typing import Any

import trio

from discovery.events import Added, Event, Removed, Resynced, SourceFresh, SourceStale, Updated
from discovery.sources.config import MdnsSourceConfig
from discovery.sources.mdns import serve_mdns_source


def emit(obj: dict[str, Any]) -> None:
    obj["t"] = time.monotonic()
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def describe(event: Event) -> dict[str, Any]:
    if isinstance(event, Added | Updated):
        ep = event.endpoint
        return {
            "ev": "added" if isinstance(event, Added) else "updated",
            "service": ep.service.name,
            "ns": ep.service.namespace,
            "address": ep.address,
            "port": ep.port,
            "proto": ep.protocol,
            "weight": ep.weight,
            "healthy": ep.healthy,
            "spiffe": None if ep.spiffe_id is None else str(ep.spiffe_id),
            "locality": ep.locality,
            "metadata": dict(ep.metadata),
        }
    if isinstance(event, Removed):
        k = event.key
        return {
            "ev": "removed",
            "service": k.service.name,
            "ns": k.service.namespace,
            "address": k.address,
            "port": k.port,
        }
    if isinstance(event, Resynced):
        return {"ev": "resynced", "count": len(event.endpoints)}
    if isinstance(event, SourceStale):
        return {"ev": "stale", "reason": event.reason}
    assert isinstance(event, SourceFresh)
    return {"ev": "fresh"}


class JsonWarnings(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        emit({"ev": "error", "message": record.getMessage()})


async def main(spec: dict[str, Any]) -> None:
    spec.setdefault("kind", "mdns")
    spec.setdefault("name", "mdns-test")
    for key in ("service_types", "interfaces"):
        if key in spec:
            spec[key] = tuple(spec[key])
    config = MdnsSourceConfig(**spec)
    send, recv = trio.open_memory_channel[Event](64)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_mdns_source, config, send)
        emit({"ev": "ready"})
        async for event in recv:
            emit(describe(event))


if __name__ == "__main__":
    handler = JsonWarnings(level=logging.WARNING)
    logging.getLogger("discovery").addHandler(handler)
    logging.getLogger("discovery").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        trio.run(main, json.loads(sys.argv[1]))
