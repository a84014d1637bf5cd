"""Peering: keep a link to every peer, federate catalogs over it, publish the routing view.

:class:`Peering` is the face the gateway holds; it wires three parts, each in its own module:

* :mod:`overlay.peering.links` -- **links per peer**: dial the dial-peers on a backoff,
  accept the others, keep each peer's dialed and accepted slots; traffic and the export go
  over any live verified link, whichever side dialed it.
* :mod:`overlay.peering.federation` -- **federation lifetimes**: the export to a peer runs on
  one link at a time and ends with it; the newest import stream from a peer wins, and its end
  marks the peer's imports stale.
* :mod:`overlay.peering.pool` -- **the link pool**: a dial-peer may get extra links when its
  links' stream slots fill up (``max_links_per_peer``); streams go to the least loaded one.
* :mod:`overlay.peering.routes` -- **route-view publishing**: the routing view (pure
  :func:`~overlay.peering.route_table.build_route_view`) is rebuilt whenever the catalog, the
  import table or a link's state changes, and published through a
  :class:`~discovery.watch.Watch`; stale imports expire on a timer owned there.

**Worker mode** (``mode="worker"``, a worker process of a site that runs several; see
docs/worker-links.md): every link is a *worker link* (pinned: streams only, no federation,
never a primary slot).  For each dial-peer replica the dial loop keeps one (dialed with the
worker SNI, ``server_name``), the pool adds more under load; the peer's workers' links are
accepted beside them.  There is no export and no import: :attr:`Peering.imports` is published
from outside (what the site's supervisor imported), the routing view is built from it and this
process's own links.
"""

from __future__ import annotations

import functools
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

import trio

from discovery.snapshot import Catalog
from discovery.watch import Watch
from overlay.federation.config import ExportConfig
from overlay.federation.export_routes import RouteTexts
from overlay.federation.import_ import ImportTable
from overlay.h2.connection import H2Connection
from overlay.identity.rotation import Identity
from overlay.link.accept import Handoff
from overlay.link.dial import open_link
from overlay.link.link import Link
from overlay.peering.config import PeeringSettings, PeerSpec
from overlay.peering.federation import PeerFederation, StreamHandler
from overlay.peering.link_pool import PoolPolicy
from overlay.peering.links import (
    LinkKeeper,
    OpenLink,
    PeerLinks,
    connections_of,
    source_address_for,
)
from overlay.peering.pool import PeerPool, StreamOpener, load_of, run_pool
from overlay.peering.replica_set import ReplicaSet
from overlay.peering.replicas import is_suspect
from overlay.peering.route_table import RouteView
from overlay.peering.routes import RoutePublisher

#: A replica's own row in ``status()["<site>"]["replicas"]``.
REPLICA_FIELDS = (
    "address",
    "up",
    "up_for_s",
    "dialed_link",
    "accepted_link",
    "links_established",
    "failed_attempts",
    "last_error",
)


#: Counts that add up over a site's replicas in ``status()`` (the rest: its first live one).
SUMMED_FIELDS = (
    "open_streams",
    "flow_control_stalls",
    "reconnects",
    "abuse_goaways",
    "links_established",
    "failed_attempts",
)


def sites_of(peers: Mapping[str, PeerLinks]) -> dict[str, list[PeerLinks]]:
    """Each peer site's replicas, in config order."""
    out: dict[str, list[PeerLinks]] = {}
    for state in peers.values():
        out.setdefault(state.spec.name, []).append(state)
    return out


def link_counts(st: PeerLinks, now: float) -> dict[str, Any]:
    """A peer's stream, flow-control, reconnect, abuse and export-ack figures (for status and
    metrics): counts of links that closed plus those of the links in the slots."""
    conns = [c.statistics() for s in st.sessions() for c in connections_of(s)]
    export = st.export_session
    oldest = None if export is None else export.oldest_unacked_at()
    stats = None if export is None else export.statistics()
    return {
        "open_streams": sum(c.open_streams for c in conns if not c.closed),
        "flow_control_stalls": st.closed_flow_stalls + sum(c.flow_control_stalls for c in conns),
        "reconnects": max(0, st.links_established - 1),
        "abuse_goaways": st.abuse_goaways + sum(1 for c in conns if c.abuse_goaway),
        "export_version": None if stats is None else stats.last_sent_version,
        "export_acked_version": None if stats is None else stats.acked_version,
        "export_ack_lag_s": None
        if export is None
        else (0.0 if oldest is None else round(now - oldest, 3)),
    }


def links_of(st: PeerLinks) -> list[dict[str, Any]]:
    """Each link to the peer (for ``/links``): primary, extra or worker, who dialed it, the streams
    open on this side's client connection over the peer's limit on them, draining or not."""
    rows: list[tuple[str, bool, Any, H2Connection | None, bool]] = [
        ("primary", True, st.dialed, st.dialed_client, False),
        ("primary", False, st.accepted, st.accepted_client, False),
    ]
    rows += [
        ("worker" if x.pinned else "extra", x.dialed, x.session, x.client, x.draining)
        for x in st.extras
    ]
    out: list[dict[str, Any]] = []
    for role, dialed, session, client, draining in rows:
        if session is None or client is None:
            continue
        load = load_of(client, None)
        out.append(
            {
                "role": role,
                "dialed": dialed,
                "remote": session.link.remote_address,
                "open_streams": load.open_streams,
                "max_streams": load.max_streams,
                "draining": draining,
                "closing": client.is_closing,
            }
        )
    return out


class Peering:
    """Links, federation and the routing view of one gateway; see the module docstring."""

    def __init__(
        self,
        *,
        local_site: str,
        identity: Identity,
        peers: Sequence[PeerSpec],
        catalog: Watch[Catalog],
        export_rules: Sequence[ExportConfig],
        settings: PeeringSettings | None = None,
        stream_handler: StreamHandler | None = None,
        clock: Callable[[], float] = trio.current_time,
        rng: Callable[[], float] = random.random,
        dial: OpenLink = open_link,
        mode: Literal["primary", "worker"] = "primary",
        server_name: str | None = None,
    ) -> None:
        """``mode="worker"``: see the module docstring; ``server_name`` (the TLS SNI of every
        dial) must then be the worker-link SNI, so a peer in worker mode keeps the link in
        one of its workers rather than handing it to its supervisor."""
        if mode == "worker" and server_name is None:
            raise ValueError("a worker-mode Peering dials with the worker-link SNI: name it")
        self.mode = mode
        self.local_site = local_site
        self.identity = identity
        self.settings = settings if settings is not None else PeeringSettings()
        self.catalog = catalog
        self.export_rules = tuple(export_rules)
        self._clock = clock
        self._peers = {p.key: PeerLinks(p) for p in peers}
        self._sites = sites_of(self._peers)
        #: Events for waiters on a replicated site's links (see link_changed).
        self._site_events: dict[str, trio.Event] = {}
        self._pools: dict[str, PeerPool] = {}
        self._dial = dial
        self._rng = rng
        self._dialers: dict[str, trio.CancelScope] = {}
        self._run_nursery: trio.Nursery | None = None
        self.imports: Watch[ImportTable] = Watch(ImportTable(grace=self.settings.import_grace))
        self._publisher = RoutePublisher(
            local_site=local_site,
            catalog=catalog,
            imports=self.imports,
            peers=self._peers,
            clock=clock,
            watch_imports=mode == "worker",
        )
        self.routes: Watch[RouteView] = self._publisher.routes
        self._federation = PeerFederation(
            local_site=local_site,
            catalog=catalog,
            export_rules=self.export_rules,
            imports=self.imports,
            ack_timeout=self.settings.ack_timeout,
            on_change=self._publisher.kick,
            stream_handler=stream_handler,
            clock=clock,
        )
        self._links = LinkKeeper(
            identity=identity,
            peers=self._peers,
            settings=self.settings,
            on_up=self._federation.export_when_chosen,
            on_stream=self._federation.on_stream,
            on_change=self._links_changed,
            clock=clock,
            rng=rng,
            dial=dial,
            worker=mode == "worker",
            server_name=server_name,
        )

    async def serve(
        self,
        *,
        host: str,
        port: int,
        handoff: Handoff | None = None,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept peers on ``host:port``, dial the dial-peers, keep the view; until cancelled.

        ``task_status.started`` receives the bound east-west port.  Dials leave from ``host``
        when it is one IP address (not a wildcard): peers see this site's east-west address as
        the source, not whatever the kernel picks (127.0.0.1 on loopback, the first address
        of a multi-homed host), so their logs and firewalls can tell sites apart.
        ``handoff``: a worker's hook (:mod:`overlay.link.handoff`).
        """
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(
                functools.partial(self._links.serve_links, host, port, handoff=handoff)
            )
            nursery.start_soon(self.run, host)
            task_status.started(listeners[0].socket.getsockname()[1])

    async def run(self, source_host: str | None = None) -> None:
        """Dial the dial-peers and keep the routing view, without listening; until cancelled.

        :meth:`serve` runs this beside its listener; links accepted some other way are handed
        to :meth:`accept` (or, a worker's hand-off, :meth:`accept_stream`).  ``source_host``:
        the east-west address dials leave from (see :meth:`serve`).
        """
        if source_host is not None:
            self._links.source_address = source_address_for(source_host)
        async with trio.open_nursery() as nursery:
            self._run_nursery = nursery
            nursery.start_soon(self._publisher.run)
            for state in self._peers.values():
                if state.spec.dial:
                    self._start_dialer(state)

    def _start_dialer(self, state: PeerLinks) -> None:
        """The dial loop of one peer, in its own cancel scope (a reload may remove the peer)."""
        if self._run_nursery is None:
            raise RuntimeError("peering is not running: no east-west listener")
        scope = trio.CancelScope()
        self._dialers[state.spec.key] = scope
        pool = None
        if self.settings.max_links_per_peer > 1:
            policy = PoolPolicy(max_links=self.settings.max_links_per_peer)
            pool = self._pools[state.spec.key] = PeerPool(state, policy)

        async def dial() -> None:
            with scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._links.dial_loop, state)
                    if pool is not None:
                        nursery.start_soon(self._run_pool, pool)

        self._run_nursery.start_soon(dial)

    async def _run_pool(self, pool: PeerPool) -> None:
        """Dial ``pool``'s extra links (the primary's dial code, timeout, source address and
        backoff) and close the idle ones; until cancelled."""
        state = pool.state
        spec = state.spec
        s = self.settings

        async def dial() -> Link:
            return await self._links.dial_peer(spec)

        async def run_extra(link: Link) -> bool:
            return await self._links.run_extra(state, link)

        await run_pool(
            pool,
            dial=dial,
            run_extra=run_extra,
            delay=lambda attempt: s.backoff.delay(attempt, self._rng()),
            clock=self._clock,
        )

    async def set_peers(self, specs: Sequence[PeerSpec]) -> tuple[str, ...]:
        """Make ``specs`` the configured peers (a config reload); the names whose links closed.

        A new peer is dialed (or accepted) from now on.  A removed one has its dialer stopped,
        its links closed and its imports withdrawn at once.  A peer whose priority alone
        changed keeps its links (the routing view is recomputed); one whose address, port,
        SPIFFE ID or dial direction changed is removed and added again, since its links were
        made, and verified, for the old values.  Every other peer's links are untouched.
        Replicas are peers of their own here (keyed by ``PeerSpec.key``): a replica added to
        or removed from a site's ``addresses`` leaves the site's other replicas linked.
        """
        wanted = {p.key: p for p in specs}
        closed: list[str] = []
        for key, state in list(self._peers.items()):
            spec = wanted.get(key)
            if spec == state.spec:
                continue
            if spec is not None and replace(state.spec, priority=spec.priority) == spec:
                state.spec = spec
                continue
            await self._remove_peer(key)
            if state.spec.name not in closed:
                closed.append(state.spec.name)
        for key, spec in wanted.items():
            if key not in self._peers:
                state = PeerLinks(spec)
                self._peers[key] = state
                if spec.dial:
                    self._start_dialer(state)
        self._sites = sites_of(self._peers)
        self._links.refresh_ids()
        self._publisher.kick()
        return tuple(closed)

    async def _remove_peer(self, key: str) -> None:
        state = self._peers.pop(key)
        self._pools.pop(key, None)
        scope = self._dialers.pop(key, None)
        if scope is not None:
            scope.cancel()
        if state.import_scope is not None:
            state.import_scope.cancel()
        for session in state.sessions():
            with trio.CancelScope(shield=True):
                await session.aclose()
        self.imports.publish(self.imports.latest.withdraw(state.spec.name, replica=key))

    async def accept(self, link: Link) -> None:
        """Run a verified link a configured peer dialed to us, until it closes."""
        await self._links.accept(link)

    async def accept_stream(self, tcp: trio.SocketStream) -> None:
        """Accept a link on a TCP connection a worker handed over, until it closes."""
        await self._links.accept_stream(tcp)

    def outbound(self, peer: str) -> StreamOpener | None:
        """What this gateway opens its streams to site ``peer`` on, if a link is up: the
        peer's pool when it may have extra links, else the one client-role connection; for
        a site with several live replicas, a :class:`ReplicaSet` spreading over them."""
        states = self._sites.get(peer)
        if not states:
            return None
        if len(states) == 1:
            return self._opener(states[0])
        live = [(st, o) for st in states if (o := self._opener(st)) is not None]
        if len(live) < 2:
            return live[0][1] if live else None
        now = self._clock()
        window = self.settings.ping_interval + self.settings.ping_timeout
        suspect = [is_suspect(st.link_lost_at, now, window) or st.losing_link() for st, _o in live]
        return ReplicaSet([o for _st, o in live], suspect)

    def redial(self, site: str) -> None:
        """Cut short the backoff of every dial loop to site ``site`` whose link is down: it
        is known to be back (a worker hears it from its supervisor, whose link to the site
        just came up), so the next dial need not wait up to ``backoff_cap_s``."""
        for state in self._sites.get(site, ()):
            if state.outbound() is None:
                state.redial.set()

    def replica_count(self, site: str) -> int:
        """How many replicas site ``site`` has configured (0: not a peer)."""
        return len(self._sites.get(site, ()))

    def replicas(self, site: str) -> tuple[str, ...]:
        """Site ``site``'s replicas' east-west addresses (``"host:port"``), config order."""
        return tuple(f"{st.spec.host}:{st.spec.port}" for st in self._sites.get(site, ()))

    def replica_outbound(self, site: str, replica: str) -> StreamOpener | None:
        """What to open a stream to one replica on (a control stream that must reach every
        replica, e.g. the fleet push), if a link to it is up; never another replica's, and
        never a worker link (its peer refuses control streams)."""
        state = self._replica(site, replica)
        if state is None:
            return None
        conn = state.control_outbound()
        pool = self._pools.get(state.spec.key)
        return pool if conn is not None and pool is not None and state.live() else conn

    def replica_changed(self, site: str, replica: str) -> trio.Event | None:
        """An event set at the next change of one replica's links (None: no such replica)."""
        state = self._replica(site, replica)
        return None if state is None else state.changed

    def _replica(self, site: str, replica: str) -> PeerLinks | None:
        return next(
            (st for st in self._sites.get(site, ()) if f"{st.spec.host}:{st.spec.port}" == replica),
            None,
        )

    def _opener(self, state: PeerLinks) -> StreamOpener | None:
        conn = state.outbound()
        pool = self._pools.get(state.spec.key)
        return conn if conn is None or pool is None else pool

    def set_export_routes(self, routes: RouteTexts) -> None:
        """The routes this site owns, by service, to attach to its exports (at start and on
        a reload): every live export stream sends the services whose routes changed."""
        if routes != self._federation.export_routes.latest:
            self._federation.export_routes.publish(routes)

    def add_stream_path(self, path: str, handler: StreamHandler) -> None:
        """Serve the streams peers open on ``path`` with ``handler(peer site, stream)``: a
        control stream of the gateway's own (the fleet document's push), never traffic."""
        self._federation.paths[path.encode()] = handler

    def link_changed(self, peer: str) -> trio.Event | None:
        """An event set at the next change of site ``peer``'s links, any replica's (None: no
        such peer)."""
        states = self._sites.get(peer)
        if not states:
            return None
        if len(states) == 1:
            return states[0].changed
        event = self._site_events.get(peer)
        if event is None:
            event = self._site_events[peer] = trio.Event()
        return event

    def _links_changed(self) -> None:
        """A link came up or went: rebuild the view, wake whoever waits on a replicated site."""
        self._publisher.kick()
        if self._site_events:
            events, self._site_events = self._site_events, {}
            for event in events.values():
                event.set()

    def set_export_rules(self, rules: Sequence[ExportConfig]) -> None:
        """New export rules (a config reload): every live export stream sends the difference;
        links stay up."""
        self.export_rules = tuple(rules)
        self._federation.export_rules.publish(self.export_rules)

    def status(self) -> dict[str, Any]:
        """Per-peer link status, for the admin API: per site, the figures of its first live
        replica (else its first), ``up`` when any replica is, and each replica's own row."""
        now = self._clock()
        out: dict[str, Any] = {}
        for site, states in sorted(self._sites.items()):
            rows = [self._replica_status(st, now) for st in states]
            first = next((r for r in rows if r["up"]), rows[0])
            out[site] = {
                **first,
                **{k: sum(r[k] for r in rows) for k in SUMMED_FIELDS},
                "links": [link for r in rows for link in r["links"]],
                "replicas": [{k: r[k] for k in REPLICA_FIELDS} for r in rows],
                "replicas_up": sum(1 for r in rows if r["up"]),
            }
        return out

    def _replica_status(self, st: PeerLinks, now: float) -> dict[str, Any]:
        outbound = st.outbound()
        live = st.live()
        return {
            "spiffe_id": str(st.spec.spiffe_id),
            "trust_domain": st.spec.spiffe_id.trust_domain.name,
            "address": f"{st.spec.host}:{st.spec.port}",
            "dial": st.spec.dial,
            "dialed_link": st.dialed_client is not None,
            "accepted_link": st.accepted_client is not None,
            "accepted_from": None if st.accepted is None else st.accepted.link.remote_address,
            "up": outbound is not None,
            "up_for_s": (
                None if outbound is None or st.up_since is None else round(now - st.up_since, 3)
            ),
            "failed_attempts": st.attempts,
            "links_established": st.links_established,
            "links": links_of(st),
            "last_error": st.last_error,
            # PINGs run on the link's outer connection (the reverse one has none).
            "ping_rtt_s": (live[0][0].outer.statistics().last_ping_rtt if live else None),
            **link_counts(st, now),
        }
