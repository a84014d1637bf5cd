"""Under churn, what the Consul source emits is proportional to the change, not the catalog.

Against the Consul-API test server over real sockets.  Each event the source emits waits in
the catalog's bounded channel (1024 events) until the applier takes it.  When every change was
announced as a full-set ``Resynced``, a busy applier let hundreds of them queue -- each holding
a tuple of every endpoint: at 100k endpoints that was ~0.8 MB an event and the gateway's RSS
grew to ~1 GB during ``scripts/bench_stall.py``.  Here the endpoints carried by all events
after the first full set are counted: one per changed instance.
"""

from __future__ import annotations

import trio

from discovery.events import Added, Event, Removed, Resynced, SourceFresh, Updated
from discovery.model import Endpoint, EndpointKey
from discovery.sources.config import ConsulSourceConfig
from discovery.sources.consul import serve_consul_source
from tests.consul_api.server import open_consul_api_server

BOUND = 10.0
SERVICES, INSTANCES = 20, 10


def carried(event: Event) -> int:
    if isinstance(event, Resynced):
        return len(event.endpoints)
    return 1 if isinstance(event, Added | Updated | Removed) else 0


def new_versions(held: dict[EndpointKey, Endpoint]) -> set[str]:
    return {k.service.name for k, e in held.items() if ("v", "2") in e.metadata}


async def test_a_churn_carries_only_the_changed_endpoints() -> None:
    async with open_consul_api_server() as srv:
        for s in range(SERVICES):
            for i in range(INSTANCES):
                srv.register_service(f"svc{s}", 9000 + i, node=f"n{i}", address=f"127.0.1.{i}")
        config = ConsulSourceConfig(kind="consul", name="consul", address=srv.url)
        send, recv = trio.open_memory_channel[Event](1024)
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_consul_source, config, send)
            with trio.fail_after(BOUND):
                first = await recv.receive()
            assert isinstance(first, Resynced) and len(first.endpoints) == SERVICES * INSTANCES
            # one instance of each of five services changes, one after the other
            changed = [f"svc{s}" for s in range(0, SERVICES, 4)]
            for name in changed:
                srv.register_service(name, 9003, node="n3", address="127.0.1.3", meta={"v": "2"})
            got: list[Event] = []
            held = {e.key: e for e in first.endpoints}
            with trio.fail_after(BOUND):
                while len(new_versions(held)) < len(changed):
                    event = await recv.receive()
                    got.append(event)
                    if isinstance(event, Resynced):
                        held = {e.key: e for e in event.endpoints}
                    elif isinstance(event, Added | Updated):
                        held[event.endpoint.key] = event.endpoint
                    elif isinstance(event, Removed):
                        held.pop(event.key, None)
            nursery.cancel_scope.cancel()
    assert sum(carried(e) for e in got) == len(changed)
    assert all(isinstance(e, Updated | SourceFresh) for e in got)
