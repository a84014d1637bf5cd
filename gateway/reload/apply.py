"""Apply a config reload to a running gateway (the Trio adapter of :mod:`gateway.reload.plan`).

Theory of operation: a reload (SIGHUP, ``isthmus reload``, ``POST /config/reload``) reads the
file the gateway was started with, off the event loop, and validates it whole with the same
loader as ``isthmus run``.  An invalid file, or a valid one whose plan has problems (a change
that cannot be applied live), is rejected: every problem is logged and returned, and nothing
changes.  A valid plan is applied as a few swaps of whole values that requests read when they
start (policies, caller-header rules, per-service balancers and outlier settings), a restart
of discovery (sources) and one of the active health checker, so live connections, tunnels and
links are untouched and every new request sees either the old config or the new one.  A
caller listener the reload removes or replaces is drained, not cut: it stops accepting at
once, and its connections finish what is in flight (up to ``[limits] drain_grace_s``) in the
background, after the reload has answered.
Reloads are serialised by a lock: two at once would race on the swaps.
"""

from __future__ import annotations

import datetime
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import trio

from foundation.errors import ConfigError
from gateway.config.errors import ConfigInvalid, Problem
from gateway.config.load import load_text, read_config_text
from gateway.config.model import GatewayConfig, ServicePortConfig
from gateway.consul_gateways.meta import GatewayInstance, site_replicas
from gateway.fleet.document import FleetDocument
from gateway.fleet.merge import load_with_fleet
from gateway.fleet.state import FleetState
from gateway.http.caller_headers import CallerHeaderRules
from gateway.listener.bind import bind_error
from gateway.listener.h1 import h1_limits
from gateway.reload.catalog import CatalogRunner
from gateway.reload.identity import WATCHER_KEY, identity_watcher, load_new_identity
from gateway.reload.listeners import CallerBind, ListenerPlan, bind_key, caller_binds
from gateway.reload.plan import ReloadPlan, config_version, plan_reload
from gateway.reload.traffic import health_checks_of, swap_traffic
from gateway.routes.forward import rules_for
from gateway.workers.role import Role
from overlay.identity.state import IdentityState
from overlay.link.listen import check_bindable
from overlay.peering.config import PeerSpec

if TYPE_CHECKING:
    from gateway.app import Gateway

log = logging.getLogger("isthmus.reload")

Result = Literal["applied", "unchanged", "rejected"]


def load_versioned(path: Path) -> tuple[GatewayConfig, str]:
    """The config at ``path`` and its version; :class:`ConfigInvalid` with every problem."""
    config, version, _text = load_versioned_text(path)
    return config, version


def load_versioned_text(path: Path) -> tuple[GatewayConfig, str, str]:
    """The config at ``path``, its version and the text read (what workers start on)."""
    text = read_config_text(path)
    config = load_text(text, base_dir=path.parent.resolve(), filename=str(path))
    return config, config_version(text), text


def _unbindable(binds: list[CallerBind], config: GatewayConfig) -> tuple[Problem, ...]:
    """The supervisor's check of the caller listeners a reload adds (its workers bind them):
    each one another program holds, as the problem a single process's failed bind gives."""
    problems: list[Problem] = []
    for bind in binds:
        try:
            check_bindable(str(bind.address), bind.port)
        except OSError as exc:
            error = bind_error(exc, what=bind_key(bind), address=str(bind.address), port=bind.port)
            problems.append(Problem(_bind_path(config, bind), str(error)))
    return tuple(problems)


def peer_specs(config: GatewayConfig, discovered: Sequence[GatewayInstance] = ()) -> list[PeerSpec]:
    """The config's peers as peering takes them: one spec per replica of a site; a peer with
    ``discover = "consul"`` gets the replicas found in Consul (``discovered``) too, each keyed
    by its address even when it is the only one (so a second one joining relinks nothing)."""
    specs: list[PeerSpec] = []
    for p in config.peers:
        hosts = p.replica_addresses()
        if p.discover:
            hosts, _skipped = site_replicas(
                discovered, site=p.name, spiffe_id=p.spiffe_id, static=hosts
            )
        for host, port in hosts:
            replica = f"{host}:{port}" if len(hosts) > 1 or p.discover else ""
            specs.append(PeerSpec(p.name, host, port, p.spiffe_id, p.priority, p.dial, replica))
    return specs


def _bind_path(config: GatewayConfig, bind: CallerBind) -> str:
    """The config path of ``bind``'s port (as config errors name it)."""
    if isinstance(bind, ServicePortConfig):
        return f"service_ports[{config.service_ports.index(bind)}].port"
    return f"listeners[{config.listeners.index(bind)}].port"


def _iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class ReloadOutcome:
    """What one reload did, as the admin API and ``isthmus reload`` show it."""

    result: Result
    trigger: str
    version: str  # the version running after this reload
    attempted: str | None  # the version of the file read (None: it could not be read)
    changes: tuple[str, ...]
    problems: tuple[Problem, ...]
    at: float  # wall clock
    filename: str | None = None

    def json(self) -> dict[str, Any]:
        return {
            "result": self.result,
            "trigger": self.trigger,
            "version": self.version,
            "attempted_version": self.attempted,
            "changes": list(self.changes),
            "problems": [
                {"path": p.path or "<root>", "line": p.line, "message": p.message}
                for p in self.problems
            ],
            "at": _iso(self.at),
        }


@dataclass
class ConfigReloader:
    """Owns the running config's version and applies reloads to ``gw``."""

    gw: Gateway
    path: Path
    version: str
    nursery: trio.Nursery
    catalog: CatalogRunner
    start_caller: Callable[[CallerBind], Awaitable[int]]  # app.start_caller, bound
    wall_clock: Callable[[], float] = time.time
    applied_at: float = 0.0
    last: ReloadOutcome | None = None
    #: The fleet document merged into the file on every reload (None: no ``[fleet]`` source).
    fleet: FleetState | None = None
    #: "supervisor": the caller listeners are the workers' (not started or stopped here);
    #: "worker": discovery and health checks are the supervisor's (docs/workers.md).
    role: Role = "single"
    #: Called after each applied reload with the text applied and the fleet document merged
    #: into it: the supervisor sends them to its workers, which apply the same version; the
    #: answer's problems (workers that did not confirm in time) join the outcome's.
    on_applied: (
        Callable[[str, str, FleetDocument | None], Awaitable[tuple[Problem, ...]]] | None
    ) = None
    _lock: trio.Lock = field(default_factory=trio.Lock)

    def __post_init__(self) -> None:
        self.applied_at = self.applied_at or self.wall_clock()
        log.info("config version %s applied (%s)", self.version, self.path)

    def status(self) -> dict[str, Any]:
        """The ``/config`` admin view: which config runs, since when, and the last reload."""
        return {
            "path": str(self.path),
            "version": self.version,
            "applied_at": _iso(self.applied_at),
            "last_reload": None if self.last is None else self.last.json(),
            "fleet": None if self.fleet is None else self.fleet.status(),
        }

    async def apply_fleet(self, doc: FleetDocument) -> ReloadOutcome:
        """Apply fleet document ``doc`` merged with the site's own file, as a reload does;
        rejected whole (the running version stays) when the merge is invalid here or needs a
        restart.  The outcome is recorded in :attr:`fleet`."""
        assert self.fleet is not None, "apply_fleet needs a [fleet] source"
        async with self._lock:
            outcome = await self._reload(f"fleet version {doc.version}", doc)
        self.last = outcome
        if outcome.result == "rejected":
            self.fleet.record_rejected(doc.version, outcome.problems, outcome.at, doc)
            log.warning(
                "fleet version %s rejected; version %s keeps running",
                doc.version,
                self.fleet.version,
            )
        else:
            self.fleet.record_applied(doc, outcome.at)
            log.info("fleet version %s applied", doc.version)
        return outcome

    def _load(
        self, doc: FleetDocument | None, text: str | None = None
    ) -> tuple[GatewayConfig, str, str]:
        """The file (plus the fleet document, if any) decoded and validated, its version and
        text; off the loop.  ``text``: the file's text as the supervisor read it (a worker
        applies the supervisor's version, not whatever the file holds a moment later)."""
        if text is None:
            text = read_config_text(self.path)
        base = self.path.parent.resolve()
        if doc is None:
            config = load_text(text, base_dir=base, filename=str(self.path))
        else:
            config = load_with_fleet(text, doc, base_dir=base, filename=str(self.path))
        return config, config_version(text), text

    async def apply_from_supervisor(
        self, trigger: str, text: str, fleet: FleetDocument | None
    ) -> ReloadOutcome:
        """A worker's reload: the text and fleet document its supervisor just applied."""
        async with self._lock:
            outcome = await self._reload(trigger, fleet, text=text)
        self.last = outcome
        if self.fleet is not None and fleet is not None and outcome.result != "rejected":
            self.fleet.record_applied(fleet, outcome.at)
        return outcome

    async def reload(self, trigger: str) -> ReloadOutcome:
        """Read, validate and (if valid and applicable) apply the config file; never raises
        for a bad file -- the outcome says what happened."""
        async with self._lock:
            outcome = await self._with_waiting_fleet(trigger)
            if outcome is None:
                outcome = await self._reload(trigger)
        self.last = outcome
        return outcome

    async def _with_waiting_fleet(self, trigger: str) -> ReloadOutcome | None:
        """A file reload first tries the latest fleet version this site rejected: the file
        may have been changed to let it in (a peer an export names).  None: still rejected."""
        waiting = None if self.fleet is None else self.fleet.waiting
        if self.fleet is None or waiting is None:
            return None
        attempt = await self._reload(f"{trigger}, with fleet version {waiting.version}", waiting)
        if attempt.result == "rejected":
            log.info(
                "fleet version %s still does not fit; reloading the file alone", waiting.version
            )
            return None
        self.fleet.record_applied(waiting, attempt.at)
        log.info("fleet version %s applied with the reloaded file", waiting.version)
        return attempt

    async def _reload(
        self, trigger: str, fleet: FleetDocument | None = None, *, text: str | None = None
    ) -> ReloadOutcome:
        now = self.wall_clock()
        if fleet is None and self.fleet is not None:
            fleet = self.fleet.document  # a file reload keeps the fleet resources that run
        try:
            config, version, text = await trio.to_thread.run_sync(self._load, fleet, text)
        except ConfigInvalid as exc:
            return self._rejected(trigger, None, exc.problems, now)
        plan = plan_reload(self.gw.config, config)
        if plan.problems:
            return self._rejected(trigger, version, plan.problems, now)
        for path, message in config.warnings():
            log.warning("config %s: %s", path, message)
        if plan.empty:
            if version != self.version:  # e.g. a comment changed: the new text is what runs
                self.version, self.applied_at = version, now
            log.info("config reload (%s): no change; version %s", trigger, self.version)
            return ReloadOutcome("unchanged", trigger, self.version, version, (), (), now)
        new_identity = None
        if plan.identity:
            new_identity, problems = await load_new_identity(self.gw.identity, config.identity)
            if problems:
                return self._rejected(trigger, version, problems, now)
        # From here on the swaps run to the end even if the caller gives up: a reload is
        # applied whole or not at all.
        with trio.CancelScope(shield=True):
            early, late = self._split_binds(plan.listeners)
            stop: tuple[str, ...] = tuple(plan.listeners.stop)
            if self.role == "supervisor":  # the workers' listeners: they apply it themselves
                failed = _unbindable([*early, *late], config)
                if failed:  # as one process rejects a listener it cannot bind
                    return self._rejected(trigger, version, failed, now)
                early, late, stop = [], [], ()
            failed = await self._start_binds(early, config)
            if failed:  # nothing else is applied yet: undo the new listeners, reject
                for bind in early:
                    await self.gw.scoped.stop(bind_key(bind))
                return self._rejected(trigger, version, failed, now)
            grace = config.limits.drain_grace_s
            for key in stop:  # drained: in flight finishes in the background (scoped.py)
                left = await self.gw.scoped.stop(key, grace_s=grace)
                draining = f"; {left} connection(s) draining (grace {grace:.1f} s)"
                log.info("%s stopped%s", key, draining if left else "")
            problems = await self._start_binds(late, config)
            if problems:  # a replaced listener that cannot bind again: keep the old one
                await self._restore(plan.listeners, late)
            self._apply(plan, config)
            if plan.traffic.health_checks and self.role != "worker":
                await health_checks_of(self.gw).restart(
                    self.nursery, self.gw.config.service_traffic, config.service_traffic
                )
            if new_identity is not None:
                await self._swap_identity(new_identity, config)
            if plan.peers:
                relinked = await self.gw.peer_directory.apply(self.gw.peering, config)
                self.gw.router.peer_sites = frozenset(p.name for p in config.peers)
                if relinked:
                    log.info("links closed by reload (peer removed or changed): %s", relinked)
            if plan.sources and self.role != "worker":
                await self.catalog.restart(
                    self.nursery, self.gw.config.sources, config.sources, plan.sources_removed
                )
            self.gw.config = config
        previous, self.version, self.applied_at = self.version, version, now
        log.info(
            "config reloaded (%s): version %s -> %s; changed: %s",
            trigger,
            previous,
            version,
            ", ".join(plan.changes)
            + (f" ({'; '.join(plan.traffic.parts)})" if plan.traffic.any else ""),
        )
        if self.on_applied is not None and text is not None:
            problems += await self.on_applied(trigger, text, fleet)
        for problem in problems:
            log.error("config reload: applied, but %s", problem.render(str(self.path)))
        return ReloadOutcome(
            "applied", trigger, version, version, plan.changes, problems, now, str(self.path)
        )

    def _split_binds(self, plan: ListenerPlan) -> tuple[list[CallerBind], list[CallerBind]]:
        """The binds that can start before anything stops (a new address), and the rest (a
        replaced listener, or a new one on an address a stopped one frees)."""
        running = caller_binds(self.gw.config)
        freed = {(b.address, b.port) for b in running if bind_key(b) in plan.stop}
        early = [
            b
            for b in plan.start
            if bind_key(b) not in plan.stop and (b.address, b.port) not in freed
        ]
        late = [b for b in plan.start if b not in early]
        return early, late

    async def _swap_identity(self, state: IdentityState, config: GatewayConfig) -> None:
        """The new identity for new connections, and the file watcher on the new paths."""
        await self.gw.scoped.stop(WATCHER_KEY)
        revoked = self.gw.identity.swap(state)
        watcher = identity_watcher(self.gw.identity, config.identity)
        await self.gw.scoped.start(self.nursery, WATCHER_KEY, watcher)
        log.info(
            "identity files changed: %s, %d trust bundle(s), %d link(s) closed",
            state.spiffe_id,
            len(state.bundles),
            revoked,
        )

    async def _restore(self, plan: ListenerPlan, late: list[CallerBind]) -> None:
        """Start again the old form of each replaced listener whose new form did not start."""
        started = set(self.gw.scoped.keys())
        for old in caller_binds(self.gw.config):
            key = bind_key(old)
            if key in plan.stop and key not in started and any(bind_key(b) == key for b in late):
                try:
                    await self.start_caller(old)
                    log.warning("%s kept with its old settings", key)
                except ConfigError as exc:
                    log.error("%s could not be restored: %s", key, exc)

    async def _start_binds(
        self, binds: list[CallerBind], config: GatewayConfig
    ) -> tuple[Problem, ...]:
        """Start each of ``binds``; the problems of those that could not bind."""
        problems: list[Problem] = []
        for bind in binds:
            try:
                await self.start_caller(bind)
            except ConfigError as exc:
                problems.append(Problem(_bind_path(config, bind), str(exc)))
        return tuple(problems)

    def _apply(self, plan: ReloadPlan, config: GatewayConfig) -> None:
        """The swaps of values requests read when they start (no await: one atomic step)."""
        if plan.policies:
            self.gw.east_west.policies = tuple(config.policies)
        if plan.exports:
            self.gw.east_west.export_rules = tuple(config.exports)
            self.gw.peering.set_export_rules(config.exports)
        if self.gw.route_sources is not None:  # routes, peers: rebuilt only when they changed
            self.gw.route_sources.set_config(config)
        elif plan.routes:
            self.gw.router.rules = rules_for(config, self.gw.router.mirrors)
        if plan.limits:
            lim = config.limits
            ew = self.gw.east_west
            self.gw.router.route_timeout = lim.route_timeout_s
            ew.route_timeout = lim.route_timeout_s
            ew.tunnel_idle_timeout = lim.idle_timeout_s
            ew.tunnel_buffer_bytes = lim.tunnel_buffer_bytes
            ew.stream_idle_timeout = lim.stream_idle_timeout_s
            ew.max_stream_duration = lim.max_stream_duration_s
            self.gw.pool.h1_limits = h1_limits(lim)
            self.gw.router.mirrors.budget.limit = lim.mirror_buffer_budget
        if plan.caller_headers:
            self.gw.cluster.caller_headers = CallerHeaderRules(
                config.site.caller_headers, config.caller_headers
            )
        if plan.traffic.any:
            swap_traffic(self.gw, plan.traffic, config)

    def _rejected(
        self, trigger: str, attempted: str | None, problems: tuple[Problem, ...], now: float
    ) -> ReloadOutcome:
        n = len(problems)
        log.warning(
            "config reload (%s) rejected, %d problem%s; version %s keeps running",
            trigger,
            n,
            "" if n == 1 else "s",
            self.version,
        )
        for problem in problems:
            log.warning("config reload: %s", problem.render(str(self.path)))
        return ReloadOutcome(
            "rejected", trigger, self.version, attempted, (), problems, now, str(self.path)
        )
