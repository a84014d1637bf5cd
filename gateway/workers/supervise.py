"""The supervisor's side of worker mode: start the workers, feed them, hear from them.

Why here and not in :mod:`gateway.app`: the supervisor is today's gateway (discovery,
federation, health checks, fleet, admin API) minus the listeners, plus this.  It

* resolves each listener's port once (a port 0 becomes one real port every worker binds,
  kept reserved by a socket bound with SO_REUSEPORT that never listens);
* runs the peering's dialers (its primary links: federation once per site pair) and accepts
  the east-west connections its workers hand over (everything but worker links);
* starts the workers (:class:`~gateway.workers.processes.WorkerPool` restarts a crashed one)
  and serves each one's control channel: the snapshot feed (catalog, failing marks, import
  table: deltas, a full copy to a new worker or on a resync), config reloads, counters;
* drains them on shutdown.

Nothing a worker needs on its request path waits for this process: a worker serves from the
last snapshot it applied.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import trio

from discovery.watch import Watch, WatchClosed
from gateway.config.errors import Problem
from gateway.config.model import GatewayConfig
from gateway.fleet.document import FleetDocument
from gateway.listener.bind import bind_error
from gateway.reload.listeners import bind_key, caller_binds
from gateway.workers.channel import Channel, ChannelClosed
from gateway.workers.control import Apply, Ejections, Gateways, Ready, Redial, Start
from gateway.workers.ejections import WorkerEjections
from gateway.workers.messages import Hello, ReloadDone, Resync, StatsReply, StatsRequest
from gateway.workers.priority import SpawnThread, lower_threads
from gateway.workers.processes import Spawn, WorkerPool
from gateway.workers.snapshot import SnapshotFeed, SnapshotVersion, clock_base
from gateway.workers.stats import StatsBook, WorkerStats, workers_json
from gateway.workers.stats_poll import StatsPoll
from overlay.link.handoff import MAX_HANDOFF_CONNECTIONS, HandoffStats, receive_handoffs
from overlay.link.listen import check_bindable, reserve_port

log = logging.getLogger("isthmus.workers")

#: How long ``start`` waits for every worker to say it serves before going on without it.
READY_TIMEOUT_S = 60.0
#: How long the supervisor gathers changes before it sends them to a worker as one step.
SNAPSHOT_COALESCE_S = 0.02
#: How long the supervisor's reload waits for every worker to apply it too.
RELOAD_TIMEOUT_S = 20.0
#: How long a round trip to the workers for their counters may take (``/metrics``).
STATS_TIMEOUT_S = 2.0


def late_workers_problem(late: Sequence[int], timeout_s: float) -> Problem:
    """How an applied reload says that some workers did not confirm it in time."""
    which = ", ".join(str(i) for i in late)
    return Problem(
        "site.workers",
        f"worker(s) {which} did not confirm the reload within {timeout_s:.0f} s; "
        "they may still route by the previous config",
    )


def listener_ports(config: GatewayConfig) -> dict[str, tuple[str, str, int]]:
    """Each listener and service port the workers bind: name -> (what it is, for errors;
    address; configured port)."""
    out: dict[str, tuple[str, str, int]] = {}
    ew = config.listener("east-west")
    if ew is not None:
        out[ew.name] = (f"listener {ew.name}", str(ew.address), ew.port)
    for bind in caller_binds(config):
        out[bind.name] = (bind_key(bind), str(bind.address), bind.port)
    return out


def with_ports(config: GatewayConfig, ports: dict[str, int]) -> GatewayConfig:
    """``config`` with the ports the supervisor resolved (a port 0 made one real port)."""
    listeners = tuple(
        replace(item, port=ports[item.name]) if item.name in ports else item
        for item in config.listeners
    )
    service_ports = tuple(
        replace(item, port=ports[item.name]) if item.name in ports else item
        for item in config.service_ports
    )
    return replace(config, listeners=listeners, service_ports=service_ports)


class WorkerConn:
    """One worker's control channel as the supervisor sees it."""

    def __init__(self, index: int, channel: Channel) -> None:
        self.index = index
        self.channel = channel
        self.pid: int | None = None
        self.ready = trio.Event()
        self.version: Any = None  # the snapshot version the worker holds (None: none)
        self.resync = False  # the worker asked for full snapshots
        self.reloaded = trio.Event()  # set when it answers the last reload sent to it
        self.wake = trio.Event()


class Supervisor:
    """Worker mode's supervisor side; see the module docstring."""

    def __init__(
        self,
        *,
        count: int,
        config_path: Path,
        text: str,
        fleet: FleetDocument | None = None,
        worker_args: Sequence[str] = (),
        drain_grace_s: float = 10.0,
        nice: int = 0,
    ) -> None:
        self.count = count
        #: ``[site] supervisor_nice``: how much lower this process's priority is than its
        #: workers' (gateway/workers/priority.py).
        self.nice = nice
        self.config_path = config_path
        #: The config text and fleet document that run (a new worker starts on them).
        self.text = text
        self.fleet = fleet
        self.worker_args = tuple(worker_args)
        self.drain_grace_s = drain_grace_s
        self.feed = SnapshotFeed()
        self.conns: dict[int, WorkerConn] = {}
        self.ports: dict[str, int] = {}
        self._reserved: list[socket.socket] = []
        self.poll = StatsPoll(StatsBook(), StatsRequest, timeout_s=STATS_TIMEOUT_S)
        #: Each worker's ejections in force: their union is marked in ``/catalog`` and exports.
        self.ejections = WorkerEjections()
        self.pool: WorkerPool | None = None
        self.gw: Any = None
        self._nursery: trio.Nursery | None = None
        self._ready_changed = trio.Event()
        self._handoff_slots = trio.CapacityLimiter(MAX_HANDOFF_CONNECTIONS)
        self.handoff_stats = HandoffStats()

    # -- start ---------------------------------------------------------------------------

    async def start(self, nursery: trio.Nursery, gw: Any, reloader: Any) -> int | None:
        self.gw = gw
        for name, (what, host, port) in listener_ports(gw.config).items():
            try:
                if port == 0:
                    sock = reserve_port(host, 0)
                    self._reserved.append(sock)
                    port = sock.getsockname()[1]
                else:
                    check_bindable(host, port)
            except OSError as exc:  # fail at start, as one process does, not in every worker
                raise bind_error(exc, what=what, address=host, port=port) from exc
            self.ports[name] = port
        ew = gw.config.listener("east-west")
        self._nursery = nursery
        self._follow(nursery, gw.catalog, self.feed.publish_catalog)
        self._follow(nursery, gw.failing, self.feed.publish_failing)
        self._follow(
            nursery, gw.peering.imports, lambda t: self.feed.publish_imports(t, trio.current_time())
        )
        nursery.start_soon(self._redial_on_link_up, gw.peering)
        nursery.start_soon(self._pass_on_gateways, gw.peer_directory)
        if reloader is not None:
            reloader.on_applied = self.reload_workers
        spawn: Spawn = trio.lowlevel.open_process
        if self.nice > 0:  # the workers fork from a thread that keeps today's priority
            spawner = SpawnThread()
            lower_threads(self.nice, keep=(spawner.native_id,))
            spawn = spawner.open_process
            log.info("supervisor runs at nice +%d from its workers", self.nice)
        self.pool = WorkerPool(
            count=self.count,
            config_path=self.config_path,
            extra_args=self.worker_args,
            on_channel=self._serve_channel,
            on_handoff=self._serve_handoffs,
            spawn=spawn,
        )
        await nursery.start(self.pool.run)
        with trio.move_on_after(READY_TIMEOUT_S) as waited:
            while self.serving() < self.count:
                await self._ready_changed.wait()
        if waited.cancelled_caught:
            log.warning("not every worker is serving after %.0f s", READY_TIMEOUT_S)
        log.info("%d of %d workers serving", self.serving(), self.count)
        # Primary links: dial the dial-peers (from the east-west address), the route view --
        # once the workers listen on the east-west port, as one process listens before it
        # dials: a peer dialing back at once finds the port open.
        nursery.start_soon(gw.peering.run, None if ew is None else str(ew.address))
        return None if ew is None else self.ports[ew.name]

    def serving(self) -> int:
        """How many workers serve (applied their first snapshot, listeners up)."""
        return sum(1 for c in self.conns.values() if c.ready.is_set())

    def _follow(self, nursery: trio.Nursery, watch: Watch[Any], publish: Any) -> None:
        """Publish each new value of ``watch`` into the feed and wake every worker's sender."""

        async def follow() -> None:
            seen = watch.count
            publish(watch.latest)
            while True:
                try:
                    seen, value = await watch.wait_newer(seen)
                except WatchClosed:
                    return
                publish(value)
                self._wake_all()

        nursery.start_soon(follow)

    async def _redial_on_link_up(self, peering: Any) -> None:
        """When a peer site's link comes up here (it restarted, or the network healed), tell
        the workers: those whose own link to it is still down dial it now."""
        up: set[str] = set()
        seen = peering.routes.count
        while True:
            try:
                seen, _view = await peering.routes.wait_newer(seen)  # links changed, or more
            except WatchClosed:
                return
            now_up = {site for site, row in peering.status().items() if row.get("up")}
            back = tuple(sorted(now_up - up))
            up = now_up
            if back:
                for conn in list(self.conns.values()):
                    with contextlib.suppress(ChannelClosed):
                        await conn.channel.send(Redial(back))

    async def _pass_on_gateways(self, directory: Any) -> None:
        """Each new set of peer gateways found in Consul, to every worker."""
        while True:
            await directory.changed.wait()
            for conn in list(self.conns.values()):
                with contextlib.suppress(ChannelClosed):
                    await conn.channel.send(Gateways(directory.instances))

    def _wake_all(self) -> None:
        for conn in self.conns.values():
            conn.wake.set()

    # -- one worker's channel --------------------------------------------------------------

    async def _serve_channel(self, index: int, channel: Channel) -> None:
        """Serve worker ``index``'s channel until it closes (the worker exited)."""
        conn = WorkerConn(index, channel)
        try:
            hello = await channel.receive()
            if not isinstance(hello, Hello):
                log.warning("worker %d: expected hello, got %s", index, type(hello).__name__)
                return
            conn.pid = hello.pid
            self.conns[index] = conn
            await channel.send(
                Start(
                    ports=dict(self.ports),
                    clock_base=clock_base(),
                    text=self.text,
                    fleet=self.fleet,
                )
            )
            if self.gw.peer_directory.instances:  # the replicas found in Consul
                await channel.send(Gateways(self.gw.peer_directory.instances))
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._send_snapshots, conn)
                await self._receive(conn)
                nursery.cancel_scope.cancel()
        except* ChannelClosed:  # the worker exited (the pool starts it again)
            pass
        finally:
            conn.reloaded.set()  # a reload waits for no worker that is gone
            if self.conns.get(index) is conn:
                del self.conns[index]
            if self.gw is not None:  # its ejections end with it (a new worker starts clean)
                self.gw.outlier.set_reported(
                    self.ejections.drop((index, conn.pid), trio.current_time())
                )

    async def _send_snapshots(self, conn: WorkerConn) -> None:
        while True:
            # Changes that arrive together (a Consul answer of many services, a peer's
            # snapshot in parts) make one step: fewer, larger deltas, each diffed once.
            await trio.sleep(SNAPSHOT_COALESCE_S)
            conn.wake = trio.Event()
            if conn.resync:  # the worker missed a step: everything whole
                conn.version, conn.resync = None, False
            version = self.feed.version
            for frame in self.feed.frames_for(conn.version):  # pickled once for every worker
                await conn.channel.send_encoded(frame)
            conn.version = version  # (a resync asked meanwhile resets it at the top)
            await conn.wake.wait()

    async def _receive(self, conn: WorkerConn) -> None:
        while True:
            message = await conn.channel.receive()
            if isinstance(message, Ready):
                conn.ready.set()
                self._ready_changed.set()
                self._ready_changed = trio.Event()
                log.info("worker %d (pid %s) serves", conn.index, conn.pid)
            elif isinstance(message, Resync):
                log.warning("worker %d asks for a full snapshot: %s", conn.index, message.reason)
                conn.resync = True
                conn.wake.set()
            elif isinstance(message, StatsReply):
                self.poll.answer(conn.index, message.request_id, message.stats)
            elif isinstance(message, Ejections):
                union = self.ejections.update((conn.index, conn.pid), message, trio.current_time())
                self.gw.outlier.set_reported(union)
            elif isinstance(message, ReloadDone):
                result = message.outcome.get("result")
                if result == "rejected":
                    log.error("worker %d rejected the reload: %s", conn.index, message.outcome)
                conn.reloaded.set()
            else:
                log.warning("worker %d sent %s", conn.index, type(message).__name__)

    async def _serve_handoffs(self, index: int, dgram: trio.socket.SocketType) -> None:
        """The east-west connections worker ``index`` hands over: today's accept path."""
        await receive_handoffs(
            dgram,
            self.gw.peering.accept_stream,
            slots=self._handoff_slots,
            stats=self.handoff_stats,
            # The links handed over outlive this receiver (a worker's replacement starts a
            # new one): they run in the supervisor's nursery.
            handler_nursery=self._nursery,
        )

    # -- what the rest of the supervisor asks of the workers -------------------------------

    async def reload_workers(
        self, trigger: str, text: str, fleet: FleetDocument | None
    ) -> tuple[Problem, ...]:
        """Send an applied reload to every worker (each applies the same text) and wait,
        bounded, until each one says it applied it and holds the snapshot with its changes: a
        reload answered "applied" is in force on every connection accepted after the answer,
        as with one process.  The answer: a problem naming the workers that did not confirm
        in time (the reload stays applied; they may still route by the old config)."""
        self.text, self.fleet = text, fleet
        target = self._publish_latest()
        waiting = []
        for conn in list(self.conns.values()):
            conn.reloaded = trio.Event()
            try:
                await conn.channel.send(
                    Apply(trigger=trigger, text=text, fleet=fleet, snapshot=target)
                )
            except ChannelClosed:
                continue  # it exits; its replacement starts on the new text
            waiting.append(conn)
        with trio.move_on_after(RELOAD_TIMEOUT_S) as waited:
            for conn in waiting:
                await conn.reloaded.wait()
        if not waited.cancelled_caught:
            return ()
        late = [c.index for c in waiting if not c.reloaded.is_set()]
        log.warning("workers %s did not confirm the reload within %.0f s", late, RELOAD_TIMEOUT_S)
        return (late_workers_problem(late, RELOAD_TIMEOUT_S),)

    def _publish_latest(self) -> SnapshotVersion:
        """The feed's version with what the reload just changed (the catalog of its new
        sources, marks, imports): published here, not left to the followers' tasks, which
        may not have run yet; every worker's sender is woken to send it."""
        gw = self.gw
        self.feed.publish_catalog(gw.catalog.latest)
        self.feed.publish_failing(gw.failing.latest)
        self.feed.publish_imports(gw.peering.imports.latest, trio.current_time())
        self._wake_all()
        return self.feed.version

    async def stats(self, *, routes: bool = False) -> list[WorkerStats]:
        """Every worker's last counters: one bounded round of requests (a worker that does
        not answer in time keeps its last counts; a replaced one's stay in ``retired``).
        ``routes``: each worker that answers adds its route view (``/routes``)."""
        channels = {i: c.channel.send for i, c in self.conns.items()}
        if not routes:
            return await self.poll.poll(channels)
        return await self.poll.poll(channels, lambda rid: StatsRequest(rid, routes=True))

    def serving_indexes(self) -> set[int]:
        """The workers that serve now (applied their first snapshot, listeners up)."""
        return {i for i, c in self.conns.items() if c.ready.is_set()}

    async def drain(self, grace_s: float | None = None) -> None:
        """Stop the workers gracefully (they finish what is in flight, up to the grace)."""
        if self.pool is not None:
            await self.pool.drain(self.drain_grace_s if grace_s is None else grace_s)

    def workers_view(self, reports: list[WorkerStats] | None = None) -> dict[str, Any]:
        """``/workers``: each worker's process (pid, restarts, last exit), whether it serves,
        and from its last report: requests served, what it has in flight, its snapshot."""
        procs = {} if self.pool is None else self.pool.workers_status()
        figures = workers_json(reports if reports is not None else self.poll.book.current())
        rows = []
        for index in range(self.count):
            conn = self.conns.get(index)
            row: dict[str, Any] = {"index": index}
            row.update(figures.get(str(index), {}))
            row.update(procs.get(index, {}))
            row.update(
                pid=None if conn is None else conn.pid,
                connected=conn is not None,
                serving=conn is not None and conn.ready.is_set(),
            )
            rows.append(row)
        return {"count": self.count, "supervisor_pid": os.getpid(), "workers": rows}

    def admin_views(self, views: dict[str, Any], queries: dict[str, Any]) -> None:
        from gateway.workers.admin import worker_admin  # the merges: E's part

        worker_admin(self, views, queries)
