"""The static source: the config's endpoints, as one Resynced, then quiet."""

from __future__ import annotations

import trio

from discovery.events import Event, Resynced
from discovery.model import Endpoint, ServiceName
from discovery.sources.config import StaticEndpointConfig, StaticSourceConfig
from discovery.sources.static import serve_static_source, static_version
from foundation.spiffe_id import SpiffeId

CONFIG = StaticSourceConfig(
    kind="static",
    name="local",
    endpoints=(
        StaticEndpointConfig(service="api", address="127.0.0.1", port=8080, namespace="payments"),
        StaticEndpointConfig(
            service="db",
            address="127.0.0.2",
            port=5432,
            protocol="tcp",
            weight=3,
            spiffe_id=SpiffeId.parse("spiffe://aws-east.isthmus.test/db"),
            locality="rack-1",
            healthy=False,
        ),
    ),
)


async def test_static_source_sends_one_resync_with_every_endpoint_then_returns() -> None:
    send, receive = trio.open_memory_channel[Event](10)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_static_source, CONFIG, send)
        events = []
        while True:
            try:
                events.append(receive.receive_nowait())
            except trio.WouldBlock:
                break
    assert len(events) == 1
    (event,) = events
    assert isinstance(event, Resynced) and event.source == "local"
    api, db = event.endpoints
    assert api == Endpoint(ServiceName("api", "payments"), "127.0.0.1", 8080)
    assert db.service == ServiceName("db") and db.protocol == "tcp" and db.weight == 3
    assert not db.healthy and db.locality == "rack-1"
    assert str(db.spiffe_id) == "spiffe://aws-east.isthmus.test/db"


def test_version_follows_the_configured_endpoints() -> None:
    assert static_version(CONFIG) == static_version(CONFIG)
    other = StaticSourceConfig(kind="static", name="local", endpoints=CONFIG.endpoints[:1])
    assert static_version(other) != static_version(CONFIG)
    # Deterministic across processes (no salted hash()): a fixed value for an empty list.
    empty = StaticSourceConfig(kind="static", name="x")
    assert static_version(empty) == static_version(StaticSourceConfig(kind="static", name="y"))
