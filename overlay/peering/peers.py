"""Peering: keep a link to every peer, federate catalogs over it, publish the routing view.

Theory of operation
-------------------
Per peer (``[[peers]]`` in the gateway config) this gateway may hold two links: the one it
*dialed* and the one the peer dialed to it (*accepted*).  Both are kept -- there is no
tie-break to race on -- and each carries HTTP/2 both ways (see
:mod:`overlay.link.session`).  This gateway sends its traffic and its export over **any live
verified link** to the peer, whichever side dialed it: the one it dialed when that is up
(``dial = true``), otherwise the accepted link's reverse connection.  Why: when a peer
restarts, it dials us at once; waiting for our own redial (which may be far off on the
backoff schedule) would keep the peer unroutable for no reason.  A peer with
``dial = false`` (behind NAT; it dials us) only ever has the accepted link.

The export to a peer runs on one link at a time (there is never a second exporter of the same
catalog): it starts on the link we send on and stays there until that link goes (or is
replaced in its slot by a newer link of the same direction), then moves to the remaining live
link.

Imports: a peer's export stream may arrive on either link.  The newest stream from a peer wins
(the previous one is cancelled), because only one import session per origin can be applied to
the import table.  When the stream carrying a peer's export ends, the peer's imports turn stale
(kept for ``import_grace`` seconds, then withdrawn); the next snapshot restores them.

Dialing: each dial-peer has a task that connects, runs the link until it closes, and retries
after :class:`~discovery.backoff.Backoff` with full jitter, so a hundred gateways whose peer
restarts do not reconnect in lock-step.  The schedule restarts at attempt 0 only after a link
was *established* (peer verified, both HTTP/2 connections set up, our first PING answered):
a TLS 1.3 server rejects our certificate only after our side of the handshake has completed
(an alert or EOF on the first read), so a successful handshake alone proves nothing and must
not reset the backoff.  A peer that presents the wrong SPIFFE ID never gets a link.

The routing view is rebuilt (pure :func:`~overlay.peering.route_table.build_route_view`) whenever
the catalog, the import table or a link's state changes, and published through a
:class:`~discovery.watch.Watch`; stale imports expire on a timer owned here.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import immutables
import trio

from discovery.backoff import Backoff
from discovery.catalog import Catalog
from discovery.watch import Watch
from foundation.errors import IsthmusError
from foundation.spiffe_id import SpiffeId
from overlay.federation.config import ExportConfig
from overlay.federation.import_ import ImportTable, ImportUpdate
from overlay.federation.protocol import FederationProtocolError
from overlay.federation.stream import (
    FEDERATION_PATH,
    routable_endpoints,
    run_export,
    serve_import,
)
from overlay.h2.connection import H2Connection
from overlay.h2.limits import H2Limits
from overlay.h2.stream import H2Stream, TunnelError
from overlay.identity.rotation import Identity
from overlay.link.accept import serve_links
from overlay.link.dial import open_link
from overlay.link.link import Link
from overlay.link.session import LinkSession
from overlay.peering.route_table import RouteView, build_route_view

log = logging.getLogger("isthmus.peering")

StreamHandler = Callable[[str, H2Stream], Any]  # (peer site, stream) -> awaitable


def source_address_for(host: str) -> str | None:
    """``host`` if outgoing sockets should be bound to it (one IP address), else ``None``."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None  # a host name: let the kernel choose
    return None if ip.is_unspecified else str(ip)


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    """The first leaf of an exception group (what a log line should name)."""
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


@dataclass(frozen=True, slots=True)
class PeerSpec:
    """A peer as peering needs it (built from ``PeerConfig``)."""

    name: str
    host: str
    port: int
    spiffe_id: SpiffeId
    priority: int = 100
    dial: bool = True


@dataclass(frozen=True, slots=True)
class PeeringSettings:
    ping_interval: float = 5.0
    ping_timeout: float = 3.0
    connect_timeout: float = 10.0
    handshake_timeout: float = 10.0
    ack_timeout: float = 30.0
    import_grace: float = 60.0
    backoff: Backoff = field(default_factory=lambda: Backoff(base_s=0.25, cap_s=30.0))
    h2_limits: H2Limits | None = None
    startup_grace: float = 30.0


def dial_failure_level(*, links_established: int, since_start: float, grace: float) -> int:
    """The log level of a failed dial: INFO while the peer may simply not be up yet.

    Sites are started together (a demo, a rollout, a data-centre power-on), so the first dials
    to a peer that has never been linked fail as a matter of course; warning about them would
    teach operators to ignore the warning.  Past ``grace`` seconds, or once a link to the peer
    has existed (it was up and is gone), a failed dial is a WARNING.
    """
    if links_established == 0 and since_start < grace:
        return logging.INFO
    return logging.WARNING


@dataclass
class _PeerState:
    spec: PeerSpec
    dialed: LinkSession | None = None
    accepted: LinkSession | None = None
    dialed_client: H2Connection | None = None
    accepted_client: H2Connection | None = None
    attempts: int = 0
    links_established: int = 0
    last_error: str | None = None
    up_since: float | None = None
    import_scope: trio.CancelScope | None = None
    exporting: LinkSession | None = None  # the link our export to this peer runs on
    changed: trio.Event = field(default_factory=trio.Event)  # set (and replaced) per change

    def live(self) -> list[tuple[LinkSession, H2Connection]]:
        """Live links in order of preference: the dialed one first when we dial the peer."""
        slots = [(self.dialed, self.dialed_client), (self.accepted, self.accepted_client)]
        if not self.spec.dial:
            slots.reverse()
        return [(s, c) for s, c in slots if s is not None and c is not None and not c.is_closing]

    def outbound(self) -> H2Connection | None:
        """The connection this gateway sends on to the peer: any live link, whoever dialed."""
        live = self.live()
        return live[0][1] if live else None

    def export_wanted_on(self, session: LinkSession) -> bool:
        """Whether the export should (re)start on ``session``: nobody exports on a link still
        in a slot, and ``session`` is the preferred live link."""
        holder = self.exporting
        if holder is not None and holder in (self.dialed, self.accepted):
            return False
        live = self.live()
        return bool(live) and live[0][0] is session

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()


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
    ) -> None:
        self.local_site = local_site
        self.identity = identity
        self.settings = settings if settings is not None else PeeringSettings()
        self.catalog = catalog
        self.export_rules = tuple(export_rules)
        self._peers = {p.name: _PeerState(p) for p in peers}
        self._by_id = {p.spiffe_id: p.name for p in peers}
        self._stream_handler = stream_handler
        self._clock = clock
        self._rng = rng
        self.imports: Watch[ImportTable] = Watch(ImportTable(grace=self.settings.import_grace))
        self.routes: Watch[RouteView] = Watch(RouteView(local_site, immutables.Map()))
        self._route_kick_send, self._route_kick_receive = trio.open_memory_channel[None](1)
        self._source_address: str | None = None

    # -- public ------------------------------------------------------------------------------

    async def serve(
        self,
        *,
        host: str,
        port: int,
        task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept peers on ``host:port``, dial the dial-peers, keep the view; until cancelled.

        ``task_status.started`` receives the bound east-west port.  Dials leave from ``host``
        when it is one IP address (not a wildcard): peers see this site's east-west address as
        the source, not whatever the kernel picks (127.0.0.1 on loopback, the first address
        of a multi-homed host), so their logs and firewalls can tell sites apart.
        """
        self._source_address = source_address_for(host)
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(self._serve_links, host, port)
            nursery.start_soon(self._route_loop)
            for state in self._peers.values():
                if state.spec.dial:
                    nursery.start_soon(self._dial_loop, state)
            task_status.started(listeners[0].socket.getsockname()[1])

    def outbound(self, peer: str) -> H2Connection | None:
        """The client-role HTTP/2 connection to ``peer`` this gateway sends on, if up."""
        state = self._peers.get(peer)
        return None if state is None else state.outbound()

    def status(self) -> dict[str, Any]:
        """Per-peer link status, for the admin API."""
        now = self._clock()
        out: dict[str, Any] = {}
        for name, st in sorted(self._peers.items()):
            outbound = st.outbound()
            live = st.live()
            out[name] = {
                "spiffe_id": str(st.spec.spiffe_id),
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
                "last_error": st.last_error,
                # PINGs run on the link's outer connection (the reverse one has none).
                "ping_rtt_s": (live[0][0].outer.statistics().last_ping_rtt if live else None),
            }
        return out

    # -- links -------------------------------------------------------------------------------

    async def _serve_links(
        self, host: str, port: int, *, task_status: trio.TaskStatus[Any]
    ) -> None:
        await serve_links(
            self._on_accepted,
            host=host,
            port=port,
            identity=self.identity,
            authorize=lambda sid: sid in self._by_id,
            site_of=self._site_of,
            handshake_timeout=self.settings.handshake_timeout,
            task_status=task_status,
        )

    def _site_of(self, spiffe_id: SpiffeId | None, host: str) -> str | None:
        """The configured peer a connection comes from, for log lines: by SPIFFE ID when it
        verified, else by source address (peers dial from their east-west address)."""
        if spiffe_id is not None:
            return self._by_id.get(spiffe_id)
        names = [n for n, st in self._peers.items() if st.spec.host == host]
        return names[0] if len(names) == 1 else None

    async def _dial_loop(self, state: _PeerState) -> None:
        spec = state.spec
        s = self.settings
        started = self._clock()
        while True:
            established = False
            try:
                link = await open_link(
                    spec.host,
                    spec.port,
                    identity=self.identity,
                    expected=spec.spiffe_id,
                    timeout=s.connect_timeout,
                    local_address=self._source_address,
                )
            except IsthmusError as exc:
                state.last_error = f"{type(exc).__name__}: {exc}"
                level = dial_failure_level(
                    links_established=state.links_established,
                    since_start=self._clock() - started,
                    grace=s.startup_grace,
                )
                log.log(
                    level, "cannot link to %s at %s:%d: %s", spec.name, spec.host, spec.port, exc
                )
            else:
                established = await self._run_session(state, link, dialed=True)
            if established:  # see the module docstring: a handshake alone proves nothing
                state.attempts = 0
            delay = s.backoff.delay(state.attempts, self._rng())
            state.attempts += 1
            await trio.sleep(delay)

    async def _on_accepted(self, link: Link) -> None:
        name = self._by_id.get(link.peer_id)
        if name is None:  # authorize() already refused unknown IDs; defensive
            return
        await self._run_session(self._peers[name], link, dialed=False)

    async def _run_session(self, state: _PeerState, link: Link, *, dialed: bool) -> bool:
        """Run one link until it closes; return whether it was ever established."""
        s = self.settings
        holder: list[LinkSession] = []

        async def handler(stream: H2Stream) -> None:
            await self._on_stream(state, holder[0], stream)

        session = LinkSession(
            link,
            dialed=dialed,
            handler=handler,
            limits=s.h2_limits,
            ping_interval=s.ping_interval,
            ping_timeout=s.ping_timeout,
        )
        holder.append(session)

        async def run_link(nursery: trio.Nursery, *, task_status: trio.TaskStatus[Any]) -> None:
            # The link's end ends every task that lives for it (the export, or the wait to
            # export): without this a waiting task would keep a dead link in its slot.
            try:
                await session.run(task_status=task_status)
            finally:
                nursery.cancel_scope.cancel()

        try:
            async with trio.open_nursery() as nursery:
                try:
                    client: H2Connection = await nursery.start(run_link, nursery)
                except IsthmusError as exc:
                    state.last_error = f"link setup: {exc}"
                    log.warning("link with %s failed during set-up: %s", state.spec.name, exc)
                    return False
                state.last_error = None
                self._set_link(state, dialed, session, client)
                log.info(
                    "link %s %s is up (%s, %s)",
                    "to" if dialed else "from",
                    state.spec.name,
                    link.peer_id,
                    link.remote_address,
                )
                nursery.start_soon(self._export_when_chosen, state, session, client)
        except* TunnelError as group:  # the link died under one of its tasks: it is down
            log.debug("link with %s ended: %s", state.spec.name, _first(group))
        finally:
            # A peer that restarted may already have a newer link of the same direction up
            # (its new inbound link can arrive before the PING deadline retires this one):
            # only clear the slot if it still holds this session.
            current = state.dialed if dialed else state.accepted
            if current is session or current is None:
                self._set_link(state, dialed, None, None)
            reason = session.outer.close_reason
            state.last_error = None if reason is None else f"{type(reason).__name__}: {reason}"
            if dialed and not session.established:
                # Under TLS 1.3 a peer rejects our certificate only after our handshake
                # finished: all we see is the link closing at once.  Say what it likely means.
                own = self.identity.state
                log.warning(
                    "link to %s closed before it was established (%s): the peer may reject"
                    " our certificate -- our SVID %s is valid until %s; is trust domain %s in"
                    " the peer's bundles?",
                    state.spec.name,
                    reason,
                    own.spiffe_id,
                    f"{own.svid.leaf.not_valid_after_utc:%Y-%m-%dT%H:%M:%SZ}",
                    own.spiffe_id.trust_domain,
                )
            else:
                log.info(
                    "link %s %s is down: %s", "to" if dialed else "from", state.spec.name, reason
                )
        return session.established

    def _set_link(
        self,
        state: _PeerState,
        dialed: bool,
        session: LinkSession | None,
        client: H2Connection | None,
    ) -> None:
        was_up = state.outbound() is not None
        if dialed:
            state.dialed, state.dialed_client = session, client
        else:
            state.accepted, state.accepted_client = session, client
        is_up = state.outbound() is not None
        if is_up and (not was_up or state.up_since is None):
            state.up_since = self._clock()
            state.links_established += 1
        elif not is_up:  # also when the link was already closing (was_up read False)
            state.up_since = None
        state.notify()
        self._kick_routes()

    # -- federation ----------------------------------------------------------------------------

    async def _export_when_chosen(
        self, state: _PeerState, session: LinkSession, client: H2Connection
    ) -> None:
        """Export over this link once it is the one to export on (see the module docstring).

        Runs in the link's nursery, so it ends with the link.
        """
        while not state.export_wanted_on(session):
            await state.changed.wait()
        state.exporting = session
        try:
            await self._export(state, session, client)
        finally:
            if state.exporting is session:
                state.exporting = None
                state.notify()

    async def _export(self, state: _PeerState, session: LinkSession, client: H2Connection) -> None:
        site = state.spec.name
        try:
            await run_export(
                client,
                local_site=self.local_site,
                peer_site=site,
                catalog=self.catalog,
                rules=self.export_rules,
                ack_timeout=self.settings.ack_timeout,
                clock=self._clock,
            )
        except* FederationProtocolError as group:
            log.warning("export to %s failed, closing the link: %s", site, _first(group))
            state.last_error = f"export: {_first(group)}"
        except* TunnelError as group:
            log.debug("export stream to %s ended: %s", site, _first(group))
        except* Exception as group:  # a bug must cost this link, never the gateway
            log.error("export to %s failed unexpectedly", site, exc_info=_first(group))
        finally:
            with trio.CancelScope(shield=True):
                await session.aclose()

    async def _on_stream(self, state: _PeerState, session: LinkSession, stream: H2Stream) -> None:
        path = dict(stream.request_headers).get(b":path")
        if path == FEDERATION_PATH.encode():
            await self._import(state, session, stream)
        elif self._stream_handler is not None:
            await self._stream_handler(state.spec.name, stream)
        else:
            await stream.send_headers([(":status", "404")], end_stream=True)

    async def _import(self, state: _PeerState, session: LinkSession, stream: H2Stream) -> None:
        site = state.spec.name
        if state.import_scope is not None:
            state.import_scope.cancel()  # the newest export stream from a peer wins
        scope = trio.CancelScope()
        state.import_scope = scope

        def on_update(update: ImportUpdate) -> None:
            self.imports.publish(self.imports.latest.apply(update, self._clock()))
            self._kick_routes()

        failed = False
        try:
            with scope:
                await serve_import(stream, peer_site=site, on_update=on_update)
        except* FederationProtocolError as group:
            log.warning("bad federation input from %s, disconnecting: %s", site, _first(group))
            state.last_error = f"import: {_first(group)}"
            failed = True
        except* TunnelError as group:
            log.debug("import stream from %s ended: %s", site, _first(group))
        except* Exception as group:  # a bug must cost this link, never the gateway
            log.error("import from %s failed unexpectedly", site, exc_info=_first(group))
            failed = True
        finally:
            if state.import_scope is scope:
                state.import_scope = None
                self.imports.publish(self.imports.latest.link_down(site, self._clock()))
                self._kick_routes()
        if failed:
            with trio.CancelScope(shield=True):
                await session.aclose()

    # -- the routing view ----------------------------------------------------------------------

    def _kick_routes(self) -> None:
        with contextlib.suppress(trio.WouldBlock):
            self._route_kick_send.send_nowait(None)

    async def _route_loop(self) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._kick_on_catalog)
            while True:
                now = self._clock()
                table = self.imports.latest
                expired = table.expire(now)
                if expired is not table:
                    self.imports.publish(expired)
                    table = expired
                down = {name for name, st in self._peers.items() if st.outbound() is None}
                priorities = {name: st.spec.priority for name, st in self._peers.items()}
                view = build_route_view(
                    self.local_site,
                    routable_endpoints(self.catalog.latest, now),
                    table,
                    priorities,
                    now,
                    down_peers=down,
                )
                if view != self.routes.latest:
                    self.routes.publish(view)
                deadline = table.next_expiry()
                with trio.move_on_at(float("inf") if deadline is None else deadline):
                    await self._route_kick_receive.receive()

    async def _kick_on_catalog(self) -> None:
        seen = -1
        while True:
            seen, _ = await self.catalog.wait_newer(seen)
            self._kick_routes()
