"""A Consul-API test server holding a large catalog, with bulk changes on signals.  BENCH-ONLY.

Runs :class:`tests.consul_api.server.ConsulApiServer` (the project's Consul-HTTP-API test
server) with an index per service name, so a health query costs O(instances of that service)
instead of a scan of the whole store (the plain test store is built for small catalogs).
``--endpoints N`` instances over ``--services S`` services are registered before it listens.

* SIGUSR1: a full change -- every instance re-registered with a new ``gen`` meta value, in one
  go (one index bump per service), as when a big deployment rolls: a source resync of N
  changed endpoints;
* SIGUSR2: toggles a 1 % churn every second (a third re-weighted, a third deregistered, a
  third new instances).

Run: python scripts/bench/consul_bulk.py --host H --port P --endpoints 100000 --services 500;
it prints ``listening on http://H:P`` once ready.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import trio

from tests.consul_api.server import ConsulApiServer
from tests.consul_api.store import Store


class IndexedStore(Store):
    """The test store plus a name -> instances index (health reads in O(instances))."""

    def __init__(self, datacenter: str) -> None:
        super().__init__(datacenter)
        self.by_name: dict[str, set[tuple[str, str]]] = {}

    def _register_service(self, node: str, body: Any, idx: int) -> None:
        old = self.services.get((node, str(body.get("ID") or body.get("Service"))))
        super()._register_service(node, body, idx)
        key = (node, str(body.get("ID") or body.get("Service")))
        if old is not None and old.name != body.get("Service"):
            self.by_name.get(old.name, set()).discard(key)
        self.by_name.setdefault(str(body.get("Service")), set()).add(key)

    def _drop_service(self, node: str, service_id: str, idx: int) -> bool:
        old = self.services.get((node, service_id))
        if old is not None:
            self.by_name.get(old.name, set()).discard((node, service_id))
        return super()._drop_service(node, service_id, idx)

    def health_service(self, name: str, **kwargs: Any) -> list[dict[str, Any]]:
        keys = self.by_name.get(name)
        if name == "consul" or keys is None:
            return super().health_service(name, **kwargs)
        out = []
        for key in sorted(keys):
            service = self.services[key]
            node = self.nodes[service.node]
            out.append(
                {
                    "Node": self._node_json(node),
                    "Service": self._service_json(service),
                    "Checks": [],
                }
            )
        return out


class Bulk:
    def __init__(self, server: ConsulApiServer, services: int) -> None:
        self.server = server
        self.services = services
        self.gen = 0
        self.live: dict[int, int] = {}  # instance id -> weight
        self.next_id = 0
        self.rng = random.Random(7)
        self.churning = False

    def register(self, i: int, weight: int = 1) -> None:
        self.server.store.register(
            {
                "Node": f"node{i % 100}",
                "Address": f"10.99.{i % 100}.1",
                "SkipNodeUpdate": True,
                "Service": {
                    "ID": f"i{i}",
                    "Service": f"bulk{i % self.services}",
                    "Address": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                    "Port": 1 + i % 60000,
                    "Meta": {"gen": str(self.gen)},
                    "Weights": {"Passing": weight, "Warning": 1},
                },
            }
        )
        self.live[i] = weight

    def load(self, n: int) -> None:
        for _ in range(n):
            self.register(self.next_id)
            self.next_id += 1
        self.server._wake()

    def change_all(self) -> None:
        self.gen += 1
        for i, weight in list(self.live.items()):
            self.register(i, weight)
        self.server._wake()

    def churn(self) -> None:
        third = max(1, len(self.live) // 300)
        picks = self.rng.sample(sorted(self.live), 2 * third)
        for i in picks[:third]:
            self.register(i, self.rng.randint(2, 100))
        for i in picks[third:]:
            self.server.store.deregister({"Node": f"node{i % 100}", "ServiceID": f"i{i}"})
            del self.live[i]
        for _ in range(third):
            self.register(self.next_id)
            self.next_id += 1
        self.server._wake()


async def main(args: argparse.Namespace) -> None:
    server = ConsulApiServer()
    server.store = IndexedStore(server.datacenter)
    server.store.register(
        {"Node": server.node_name, "Address": server.node_address, "Service": {"Service": "consul"}}
    )
    bulk = Bulk(server, args.services)
    bulk.load(args.endpoints)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve, args.host, args.port)
        print(f"listening on {server.url}", flush=True)
        with trio.open_signal_receiver(signal.SIGUSR1, signal.SIGUSR2) as signals:

            async def churn() -> None:
                while True:
                    await trio.sleep(1.0)
                    if bulk.churning:
                        bulk.churn()

            nursery.start_soon(churn)
            async for signum in signals:
                if signum == signal.SIGUSR1:
                    bulk.change_all()
                else:
                    bulk.churning = not bulk.churning


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8500)
    parser.add_argument("--endpoints", type=int, default=100_000)
    parser.add_argument("--services", type=int, default=500)
    trio.run(main, parser.parse_args())
