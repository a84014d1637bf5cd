#!/usr/bin/env python3
"""Benchmark the Consul source's reaction times against a bare blocking query, same run.

The tests check what the source does (a change is answered by the parked blocking query, an
outage marks it stale and keeps the last view, recovery reconverges, cancelling does not wait
for ``wait_s``); how soon is measured here.  One process runs the Consul-API test server
(``tests.consul_api.server``, real sockets on 127.0.0.1), the source, and the floor: a bare
py-consul blocking query on ``/v1/health/service/web`` through the same HTTP client, parked
at the same index -- the least any Consul watcher can do.  Per round:

* **change**: a new ``web`` instance is registered; until the source emits the ``Resynced``
  holding it, and until the bare query returns;
* **stale after 500**: the agent starts answering 500; until the source says
  ``SourceStale``, and until the bare parked query returns its error;
* **reconverge**: a change made while failing, then the agent recovers; until the source's
  ``Resynced`` holds it (bounded by the retry backoff: ``backoff_cap_s``, printed as ratio);
* **cancel**: cancelling the source with both its queries parked (``wait_s`` 600 s), and
  cancelling the parked bare query.

Run:  .venv/bin/python scripts/bench_consul.py [--rounds 20]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

from discovery.events import Event, Resynced, SourceStale
from discovery.sources.config import ConsulSourceConfig
from discovery.sources.consul import TrioConsul, serve_consul_source
from discovery.sources.consul_http import TrioHTTPClient
from tests.consul_api.server import ConsulApiServer, open_consul_api_server

GUARD_S = 30.0  # one event not seen in this long is a hang, not a figure
BACKOFF_CAP_S = 0.2


def config(url: str, wait_s: float) -> ConsulSourceConfig:
    return ConsulSourceConfig(
        kind="consul",
        name="consul",
        address=url,
        wait_s=wait_s,
        backoff_base_s=0.05,
        backoff_cap_s=BACKOFF_CAP_S,
    )


async def until_parked(srv: ConsulApiServer, count: int) -> None:
    with trio.fail_after(GUARD_S):
        while srv.parked < count:  # noqa: ASYNC110 -- a counter, nothing to wait on
            await trio.sleep(0.001)


async def next_event(
    recv: trio.MemoryReceiveChannel[Event], predicate: Callable[[Event], bool]
) -> float:
    """The time (trio clock) at which an event matching ``predicate`` arrived."""
    with trio.fail_after(GUARD_S):
        while not predicate(await recv.receive()):
            pass
    return trio.current_time()


def has_port(port: int) -> Callable[[Event], bool]:
    return lambda e: isinstance(e, Resynced) and any(x.port == port for x in e.endpoints)


async def bare_query(srv: ConsulApiServer, index: int, done: dict[str, float]) -> None:
    """The floor: one parked blocking query; records when it returned (or failed)."""
    client = TrioHTTPClient("127.0.0.1", srv.port, "http", ssl_context=None)
    consul = TrioConsul(client, token=None, dc=None)
    with contextlib.suppress(Exception):  # the 500: returning is what is timed
        await consul.health.service("web", index=index, wait="600s")
    done["t"] = trio.current_time()


async def one_round(n: int, figures: dict[str, list[tuple[float, float]]]) -> None:
    async with open_consul_api_server() as srv:
        srv.register_service("web", 8080)
        send, recv = trio.open_memory_channel[Event](256)
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_consul_source, config(srv.url, 600.0), send)
            await next_event(recv, has_port(8080))
            index = srv.store.health_service_index("web")

            # change
            floor: dict[str, float] = {}
            nursery.start_soon(bare_query, srv, index, floor)
            await until_parked(srv, 3)  # the source's two watches and the bare query
            start = trio.current_time()
            srv.register_service("web", 9000 + n)
            seen = await next_event(recv, has_port(9000 + n))
            with trio.fail_after(GUARD_S):
                while "t" not in floor:  # noqa: ASYNC110
                    await trio.sleep(0.001)
            figures["change"].append((seen - start, floor["t"] - start))

            # stale after 500, then reconverge after recovery
            index = srv.store.health_service_index("web")
            floor = {}
            nursery.start_soon(bare_query, srv, index, floor)
            await until_parked(srv, 3)
            start = trio.current_time()
            srv.fail_with_500(True)
            stale = await next_event(recv, lambda e: isinstance(e, SourceStale))
            with trio.fail_after(GUARD_S):
                while "t" not in floor:  # noqa: ASYNC110
                    await trio.sleep(0.001)
            figures["stale after 500"].append((stale - start, floor["t"] - start))
            srv.register_service("web", 9500 + n)
            start = trio.current_time()
            srv.fail_with_500(False)
            back = await next_event(recv, has_port(9500 + n))
            figures["reconverge"].append((back - start, BACKOFF_CAP_S))

            # cancel with both queries parked
            await until_parked(srv, 2)
            start = time.perf_counter()
            nursery.cancel_scope.cancel()
        ours_cancel = time.perf_counter() - start
        async with trio.open_nursery() as nursery:
            nursery.start_soon(bare_query, srv, srv.store.health_service_index("web"), {})
            await until_parked(srv, 3)
            start = time.perf_counter()
            nursery.cancel_scope.cancel()
        figures["cancel"].append((ours_cancel, time.perf_counter() - start))


async def run(rounds: int) -> dict[str, list[tuple[float, float]]]:
    figures: dict[str, list[tuple[float, float]]] = {
        "change": [],
        "stale after 500": [],
        "reconverge": [],
        "cancel": [],
    }
    for n in range(rounds):
        await one_round(n, figures)
    return figures


def report(figures: dict[str, Any]) -> None:
    for what, pairs in figures.items():
        ours = statistics.median(p[0] for p in pairs)
        ref = statistics.median(p[1] for p in pairs)
        name = "backoff cap" if what == "reconverge" else "bare query"
        print(
            f"{what:<16} source {ours * 1000:7.2f} ms  {name} {ref * 1000:7.2f} ms  "
            f"ratio {ours / ref:5.2f}  (median of {len(pairs)}; "
            f"source max {max(p[0] for p in pairs) * 1000:.2f} ms)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    logging.getLogger("discovery").setLevel(logging.ERROR)  # the 500s are on purpose
    report(trio.run(run, args.rounds))


if __name__ == "__main__":
    main()
