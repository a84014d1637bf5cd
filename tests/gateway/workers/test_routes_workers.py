"""``/routes`` of a supervisor lists a site for an address only once every serving worker
routes it there.

Why: in worker mode the requests are routed by the workers, each with the import table the
supervisor sends it a moment later and over its own links.  A peer that restarts is back in
the supervisor's view first; a worker that has not applied its fresh import yet answers 503
("no healthy endpoint in any site").  The demo waits on ``/routes`` before it says a site is
back, and so does an operator: ``/routes`` must not list gcp-west before every worker routes
to it (seen in CI: the demo test's request right after ``/routes`` listed gcp-west got 503).

Real parts: the supervisor's and the workers' gateways are built from a real config, their
reports cross the real control channel (a socketpair, pickled), and the admin views are the
app's own, rewired by :func:`~gateway.workers.admin.worker_admin`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import immutables
import pytest
import trio

from discovery.model import ServiceName
from discovery.steps import complete
from gateway.admin.sliced import Sliced
from gateway.app import Gateway, admin_views, build_gateway, load_identity
from gateway.config.load import load_text
from gateway.workers.admin import worker_admin
from gateway.workers.channel import Channel, channel_from_socket, channel_pair
from gateway.workers.messages import StatsReply, StatsRequest
from gateway.workers.routes_agreed import (
    routes_in_every_worker,
    routes_in_every_worker_steps,
    worker_routes,
)
from gateway.workers.stats import StatsBook, WorkerStats, worker_stats
from gateway.workers.stats_poll import StatsPoll
from overlay.peering.route_table import RouteView
from tests.gateway.config.config_kit import GOOD, write_identity

API = ServiceName("api", "payments")
WHOAMI = ServiceName("whoami", "default")


def view(routes: dict[ServiceName, tuple[str, ...]]) -> RouteView:
    return RouteView("aws-east", immutables.Map(routes))


async def gateway(tmp_path: Path, role: Any) -> Gateway:
    if not (tmp_path / "svid.pem").exists():
        write_identity(tmp_path)
    config = load_text(GOOD, base_dir=tmp_path)
    identity, _bundles = await load_identity(config)
    return build_gateway(config, identity, role=role)


class StandInSupervisor:
    """What :func:`worker_admin` reads of a :class:`~gateway.workers.supervise.Supervisor`:
    its gateway, its workers (here: worker gateways answering stats requests on real channels)
    and which of them serve."""

    def __init__(self, gw: Gateway, workers: list[Gateway], nursery: trio.Nursery) -> None:
        self.gw = gw
        self.count = len(workers)
        self.poll = StatsPoll(StatsBook(), StatsRequest, timeout_s=5.0)
        self._nursery = nursery
        self._sends: dict[int, Any] = {}
        self.ready = set(range(len(workers)))
        for index, wgw in enumerate(workers):
            ours, theirs = channel_pair()
            self._sends[index] = ours.send
            nursery.start_soon(self._worker, wgw, channel_from_socket(theirs), index)
            nursery.start_soon(self._read, ours, index)

    async def _worker(self, gw: Gateway, end: Channel, index: int) -> None:
        while True:  # the worker's side, as WorkerControl answers
            message = await end.receive()
            assert isinstance(message, StatsRequest)
            stats = worker_stats(gw, index=index, routes=message.routes)
            await end.send(StatsReply(message.request_id, stats))

    async def _read(self, ours: Channel, index: int) -> None:
        while True:
            reply = await ours.receive()
            assert isinstance(reply, StatsReply)
            self.poll.answer(index, reply.request_id, reply.stats)

    async def stats(self, *, routes: bool = False) -> list[WorkerStats]:
        if not routes:
            return await self.poll.poll(self._sends)
        return await self.poll.poll(self._sends, lambda rid: StatsRequest(rid, routes=True))

    def serving(self) -> int:
        return len(self.ready)

    def serving_indexes(self) -> set[int]:
        return set(self.ready)


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[tuple[StandInSupervisor, dict[str, Any]]]:
    supervisor = await gateway(tmp_path, "supervisor")
    workers = [await gateway(tmp_path, "worker") for _ in range(2)]
    async with trio.open_nursery() as nursery:
        sup = StandInSupervisor(supervisor, workers, nursery)
        views = admin_views(supervisor)
        queries: dict[str, Any] = {}
        worker_admin(sup, views, queries)  # type: ignore[arg-type]
        yield sup, {"views": views, "queries": queries, "workers": workers}
        nursery.cancel_scope.cancel()


async def get(admin: dict[str, Any], path: str) -> Any:
    """The answer the admin server gives for ``GET path`` (a query if there is one)."""
    with trio.fail_after(30):  # hang guard only
        if path in admin["queries"]:
            answer = await admin["queries"][path]({})
        else:
            answer = admin["views"][path]()
    return complete(answer.steps) if isinstance(answer, Sliced) else answer


async def test_a_site_is_listed_only_once_every_worker_routes_to_it(
    site: tuple[StandInSupervisor, dict[str, Any]],
) -> None:
    sup, admin = site
    worker0, worker1 = admin["workers"]
    # gcp-west restarted: the supervisor imported it again, worker 0 has applied that import,
    # worker 1 not yet (its copy still has gcp-west stale: no route there).
    sup.gw.peering.routes.publish(view({API: ("gcp-west",), WHOAMI: ("aws-east", "gcp-west")}))
    worker0.peering.routes.publish(view({API: ("gcp-west",), WHOAMI: ("aws-east", "gcp-west")}))
    worker1.peering.routes.publish(view({WHOAMI: ("aws-east",)}))

    doc = await get(admin, "/routes")
    assert "api.payments.isthmus" not in doc["routes"], doc
    assert doc["routes"]["whoami.default.isthmus"] == ["aws-east"], doc
    assert doc["workers_routing"] == [0, 1]
    assert doc["workers_lacking"] == {
        "api.payments.isthmus": {"gcp-west": [1]},
        "whoami.default.isthmus": {"gcp-west": [1]},
    }

    # Worker 1 applied it: now every request, in whichever worker, can go to gcp-west.
    worker1.peering.routes.publish(view({API: ("gcp-west",), WHOAMI: ("aws-east", "gcp-west")}))
    doc = await get(admin, "/routes")
    assert doc["routes"] == {
        "api.payments.isthmus": ["gcp-west"],
        "whoami.default.isthmus": ["aws-east", "gcp-west"],
    }
    assert doc["workers_lacking"] == {}


async def test_a_worker_that_does_not_serve_yet_is_not_waited_for(
    site: tuple[StandInSupervisor, dict[str, Any]],
) -> None:
    """A worker whose listeners are not up takes no request: its view does not hold the
    site's routes back (a restarting worker would otherwise empty ``/routes``)."""
    sup, admin = site
    worker0, _worker1 = admin["workers"]  # worker 1 keeps an empty view
    sup.gw.peering.routes.publish(view({API: ("gcp-west",)}))
    worker0.peering.routes.publish(view({API: ("gcp-west",)}))
    sup.ready.discard(1)  # worker 1: started, first snapshot not applied yet
    doc = await get(admin, "/routes")
    assert doc["routes"] == {"api.payments.isthmus": ["gcp-west"]}
    assert doc["workers_routing"] == [0] and doc["workers_lacking"] == {}


def test_the_comparison_in_slices_gives_the_same_answer() -> None:
    """Pure: the sliced comparison (run a service per slice) agrees with the one-go one, and
    keeps the supervisor's failover order even when a worker lists the sites otherwise."""
    supervisor = view({API: ("gcp-west", "onprem"), WHOAMI: ("aws-east", "gcp-west", "onprem")})
    workers = {
        0: worker_routes(view({API: ("onprem", "gcp-west"), WHOAMI: ("aws-east", "onprem")})),
        1: worker_routes(supervisor),
    }
    steps = routes_in_every_worker_steps(supervisor, workers, "isthmus", slice_rows=1)
    sliced, pauses = None, 0
    while sliced is None:
        try:
            next(steps)
            pauses += 1
        except StopIteration as stop:
            sliced = stop.value
    assert pauses >= 2
    assert sliced == routes_in_every_worker(supervisor, workers, "isthmus")
    agreed, lacking = sliced
    assert dict(agreed.routes) == {API: ("gcp-west", "onprem"), WHOAMI: ("aws-east", "onprem")}
    assert lacking == {"whoami.default.isthmus": {"gcp-west": [0]}}
    assert routes_in_every_worker(supervisor, {}, "isthmus") == (supervisor, {})
