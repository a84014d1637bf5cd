"""A worker process: the data plane of a site, fed by its supervisor (docs/workers.md).

Why it serves from snapshots: every request a worker routes reads only values the supervisor
sent it (the catalog, the failing marks, the import table) and its own links.  Discovery, the
federation and health checks run in the supervisor, so a 100k-endpoint resync or a peer's
snapshot never stops this event loop for longer than applying a delta takes.

Start-up order: say hello, learn the listener ports, apply the first full snapshot, then
start the listeners (a worker never serves from an empty catalog), then tell the supervisor
it serves.  The control channel's end is the worker's end: when the supervisor goes (even
killed with SIGKILL), the worker exits at once.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import trio

from discovery.heap import HeapKeeper
from gateway.app import (
    Gateway,
    build_gateway,
    load_identity,
    start_background,
    start_caller,
    start_callers,
    start_east_west,
)
from gateway.config.load import load_text
from gateway.config.model import GatewayConfig
from gateway.fleet.merge import load_with_fleet
from gateway.fleet.state import FleetState
from gateway.reload.apply import ConfigReloader
from gateway.reload.plan import config_version
from gateway.workers.channel import Channel, ChannelClosed
from gateway.workers.control import Apply, Gateways, Ready, Redial, Start
from gateway.workers.ejections import report_ejections
from gateway.workers.messages import (
    Drain,
    Hello,
    ReloadDone,
    Resync,
    StatsReply,
    StatsRequest,
)
from gateway.workers.snapshot import (
    SNAPSHOT_MESSAGES,
    NeedResync,
    SnapshotReceiver,
    clock_base,
)
from gateway.workers.snapshot_gc import after_other, apply_snapshot, before_frame, completes
from gateway.workers.snapshot_receiver import SnapshotVersion, holds
from gateway.workers.stats import worker_stats
from gateway.workers.supervise import RELOAD_TIMEOUT_S, with_ports
from overlay.link.handoff import worker_handoff

log = logging.getLogger("isthmus.workers")


class WorkerExit(Exception):
    """The supervisor is gone, or told this worker to stop: end the process."""


def publish(gw: Gateway, receiver: SnapshotReceiver) -> None:
    """Make what ``receiver`` holds the worker's live state (only the parts that changed)."""
    if gw.catalog.latest is not receiver.catalog:
        gw.catalog.publish(receiver.catalog)
    if gw.failing.latest is not receiver.failing:
        gw.failing.publish(receiver.failing)
    if gw.peering.imports.latest is not receiver.imports:
        gw.peering.imports.publish(receiver.imports)


def load_start(config_path: Path, start: Start) -> tuple[GatewayConfig, str]:
    """The config the supervisor runs (its text and fleet document), with its ports."""
    base = config_path.parent.resolve()
    if start.fleet is None:
        config = load_text(start.text, base_dir=base, filename=str(config_path))
    else:
        config = load_with_fleet(start.text, start.fleet, base_dir=base, filename=str(config_path))
    return with_ports(config, start.ports), config_version(start.text)


def complete(receiver: SnapshotReceiver) -> bool:
    """Whether every part of the first full snapshot has been applied."""
    held = receiver.version
    return min(held.catalog, held.imports, held.failing) >= 0


@contextlib.contextmanager
def keep_heap(keeper: HeapKeeper | None = None) -> Iterator[HeapKeeper]:
    """The worker's loop under a :class:`~discovery.heap.HeapKeeper`, as one process's is.

    Why: :func:`~gateway.workers.snapshot_gc.apply_snapshot` freezes each change's own
    objects, but publishing it makes more: the routing view of a peer's 10k services, rebuilt
    in other tasks once the apply has returned.  Left to CPython's schedule, the next full
    pass walked all of them: 135 ms stalls in a worker while a peer's 100k endpoints arrived
    (bench_stall --workers 2).  The keeper freezes the heap at the end of the first slow pass
    and keeps later ones short (bench_stall --workers 2, same machine and hour: the worst
    worker stall 163 ms before, 40 ms with it; the workers' longest GC pass 162 ms before,
    20 ms).  ``keeper``: tests'.
    """
    with keeper if keeper is not None else HeapKeeper() as kept:
        yield kept


async def serve_worker(
    *,
    config_path: Path,
    index: int,
    channel: Channel,
    handoff: trio.socket.SocketType,
) -> None:
    """Run worker ``index`` until its supervisor goes or drains it."""
    await channel.send(Hello(index=index, pid=os.getpid()))
    start = await channel.receive()
    if not isinstance(start, Start):
        raise WorkerExit(f"expected start, got {type(start).__name__}")
    config, version = await trio.to_thread.run_sync(load_start, config_path, start)
    fleet = start.fleet
    identity, bundles = await load_identity(config)
    gw = build_gateway(config, identity, role="worker")
    receiver = SnapshotReceiver(clock_offset=clock_base() - start.clock_base)
    with keep_heap():
        async with trio.open_nursery() as nursery:
            reloader = ConfigReloader(
                gw,
                config_path,
                version,
                nursery,
                gw.sources,
                functools.partial(start_caller, nursery, gw),
                role="worker",
            )
            if fleet is not None:
                reloader.fleet = FleetState(
                    config.fleet.source, config.fleet.prefix, config.site.name
                )
                reloader.fleet.record_applied(fleet, reloader.wall_clock())
            channel.on_frame = before_frame
            control = WorkerControl(channel, gw, receiver, reloader, nursery, index)
            nursery.start_soon(control.run)
            await control.snapshot.wait()  # the first full snapshot, before any listener
            await start_background(nursery, gw, bundles, role="worker")
            hellos = worker_handoff(handoff, timeout_s=config.limits.tls_handshake_timeout_s)
            await start_east_west(nursery, gw, handoff=hellos)
            await start_callers(nursery, gw)
            await control.serving()
            nursery.start_soon(report_ejections, channel.send, gw.outlier.ejections)
            log.info("worker %d serves (pid %d)", index, os.getpid())


class WorkerControl:
    """A worker's side of its control channel, from its start until it drains or the
    supervisor goes (then the whole worker ends: this task cancels its nursery).

    Any message may come at any time: a stats request or a reload during the start is
    answered (a reload waits until the listeners run, so it is applied to them).
    """

    def __init__(
        self,
        channel: Channel,
        gw: Gateway,
        receiver: SnapshotReceiver,
        reloader: ConfigReloader,
        nursery: trio.Nursery,
        index: int,
    ) -> None:
        self.channel = channel
        self.gw = gw
        self.receiver = receiver
        self.reloader = reloader
        self.nursery = nursery
        self.index = index
        self.snapshot = trio.Event()  # set once the first full snapshot is applied
        self._published = trio.Event()  # set (and replaced) at each snapshot made live
        self._ready = trio.Event()  # set once the listeners run
        self._held: Apply | None = None  # the newest reload that came during the start
        self._gateways: Gateways | None = None  # the newest replicas found, likewise
        self._changing = False  # a change in several messages is arriving (snapshot_gc)

    async def serving(self) -> None:
        """The listeners run: tell the supervisor, apply a reload held meanwhile."""
        await self.channel.send(Ready())
        self._ready.set()
        if self._held is not None:
            held, self._held = self._held, None
            self.nursery.start_soon(self._reload, held)
        if self._gateways is not None:
            gateways, self._gateways = self._gateways, None
            await self._follow_gateways(gateways)

    async def _follow_gateways(self, message: Gateways) -> None:
        """Link to the replicas the supervisor found in Consul (the peering must run)."""
        directory = self.gw.peer_directory
        directory.set_instances(message.instances)
        relinked = await directory.apply(self.gw.peering, self.gw.config)
        if relinked:
            log.info("links closed: replicas gone from Consul (%s)", ", ".join(relinked))

    async def run(self) -> None:
        try:
            await self._serve()
        finally:
            self.nursery.cancel_scope.cancel()

    async def _serve(self) -> None:
        while True:
            try:
                message = await self.channel.receive()
            except ChannelClosed:
                log.warning("supervisor gone: worker exits")
                return
            if not isinstance(message, SNAPSHOT_MESSAGES):
                after_other(self._changing)
            if isinstance(message, StatsRequest):
                stats = worker_stats(
                    self.gw,
                    index=self.index,
                    snapshot_version=self.receiver.version,
                    in_flight={"caller_connections": self.gw.drain.open_connections},
                    routes=message.routes,
                )
                await self.channel.send(StatsReply(message.request_id, stats))
            elif isinstance(message, Apply):
                if self._ready.is_set():
                    self.nursery.start_soon(self._reload, message)
                else:
                    self._held = message
            elif isinstance(message, Gateways):
                if self._ready.is_set():
                    await self._follow_gateways(message)
                else:
                    self._gateways = message
            elif isinstance(message, Redial):
                for site in message.sites:
                    self.gw.peering.redial(site)
            elif isinstance(message, Drain):
                log.info("draining (grace %.1f s)", message.grace_s)
                await self.gw.drain.start_and_wait(message.grace_s)
                return
            else:
                change = apply_snapshot(self.receiver, message)
                self._changing = not completes(message) and not isinstance(change, NeedResync)
                if isinstance(change, NeedResync):
                    await self.channel.send(Resync(change.reason))
                elif complete(self.receiver):
                    publish(self.gw, self.receiver)
                    self.snapshot.set()
                    self._published.set()
                    self._published = trio.Event()

    async def _reload(self, message: Apply) -> None:
        """Apply the supervisor's reload, then answer once the snapshot with its changes is
        live here too (see :class:`~gateway.workers.control.Apply`)."""
        outcome = await self.reloader.apply_from_supervisor(
            message.trigger, message.text, message.fleet
        )
        if message.snapshot is not None:
            await self._wait_snapshot(message.snapshot)
        with contextlib.suppress(ChannelClosed):
            await self.channel.send(ReloadDone(outcome.json()))

    async def _wait_snapshot(self, target: SnapshotVersion) -> None:
        """Until the snapshot this worker routes by holds ``target`` (bounded: past the
        supervisor's own wait the answer is late anyway, and it says so)."""
        with trio.move_on_after(RELOAD_TIMEOUT_S) as waited:
            while not (complete(self.receiver) and holds(self.receiver.version, target)):
                await self._published.wait()
        if waited.cancelled_caught:
            log.warning(
                "reload: snapshot %s not received within %.0f s (holding %s)",
                target,
                RELOAD_TIMEOUT_S,
                self.receiver.version,
            )


def handoff_socket(fd: int) -> trio.socket.SocketType:
    """The worker's end of the hand-off socketpair, from its inherited fd."""
    return trio.socket.from_stdlib_socket(socket.socket(fileno=fd))
