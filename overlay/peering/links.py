"""Links per peer: dial the dial-peers, accept the others, keep each peer's two link slots.

Per peer (``[[peers]]`` in the gateway config) this gateway may hold two links: the one it
*dialed* and the one the peer dialed to it (*accepted*).  Both are kept -- there is no
tie-break to race on -- and each carries HTTP/2 both ways (see
:mod:`overlay.link.session`).  This gateway sends its traffic and its export over **any live
verified link** to the peer, whichever side dialed it: the one it dialed when that is up
(``dial = true``), otherwise the accepted link's reverse connection.  Why: when a peer
restarts, it dials us at once; waiting for our own redial (which may be far off on the
backoff schedule) would keep the peer unroutable for no reason.  A peer with
``dial = false`` (behind NAT; it dials us) only ever has the accepted link.

Dialing: each dial-peer has a task that connects, runs the link until it closes, and retries
after :class:`~discovery.backoff.Backoff` with full jitter, so a hundred gateways whose peer
restarts do not reconnect in lock-step.  The schedule restarts at attempt 0 only after a link
was *established* (peer verified, both HTTP/2 connections set up, our first PING answered):
a TLS 1.3 server rejects our certificate only after our side of the handshake has completed
(an alert or EOF on the first read), so a successful handshake alone proves nothing and must
not reset the backoff.  A peer that presents the wrong SPIFFE ID never gets a link.

Beside these two *primary* links, a peer may have **extra links** (:class:`ExtraLink`): ones
this side's link pool dialed for more stream slots (:mod:`overlay.peering.pool`), or ones the
peer's pool dialed to us (its reverse connection's request says so).  They carry streams only.
When a primary link goes while an extra link of the same direction is up, the extra one takes
its place (and the export with it), so the peer is down only when every link is; the dial
loop dials again only once the dialed slot is empty.

**Worker links** (``isthmus-link: worker``; docs/worker-links.md) are *pinned* extra links:
a worker process's own links, streams only, never an heir to a primary slot (the primary's
redial takes it back, and the export with it), never counted as a link the peer's export can
resume on.  A worker's keeper (``worker=True``) makes every link it dials or accepts one: its
dial loop keeps one (the *anchor*, dialed with the worker SNI) where a primary-mode keeper
keeps the primary link.

What runs *on* a link (the export, the peer's streams) is not decided here: the keeper calls
its ``on_up`` hook inside the link's nursery, so whatever it starts ends with the link, and
hands every stream the peer opens to ``on_stream``.  ``on_change`` hears of every slot change
(the routing view depends on which peers are up).
"""

from __future__ import annotations

import ipaddress
import logging
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from foundation.errors import IsthmusError, first_leaf
from foundation.spiffe_id import SpiffeId
from overlay.federation.export import ExportSession
from overlay.h2.connection import H2Connection
from overlay.h2.stream import H2Stream, TunnelError
from overlay.identity.rotation import Identity
from overlay.link.accept import Handoff, accept_link_stream, serve_links
from overlay.link.dial import open_link
from overlay.link.handshake_gate import HandshakeGate
from overlay.link.link import Link, LinkTimeout
from overlay.link.session import LinkSession
from overlay.peering.config import PeeringSettings, PeerSpec
from overlay.peering.replicas import accept_replica

log = logging.getLogger("isthmus.peering")


class OpenLink(Protocol):
    """How a link to a peer is dialed: :func:`overlay.link.dial.open_link` (tests: in memory)."""

    async def __call__(
        self,
        host: str,
        port: int,
        *,
        identity: Identity,
        expected: SpiffeId,
        timeout: float,  # noqa: ASYNC109 -- open_link's one budget for connect + handshake
        local_address: str | None = None,
        server_name: str | None = None,
    ) -> Link: ...


def gated(dial: OpenLink, gate: HandshakeGate) -> OpenLink:
    """``dial`` holding one of ``gate``'s handshake slots from TCP connect to verified link.

    The wait for a slot comes *before* the connect (no peer's handshake timer runs while we
    wait) and is bounded by the dial's own ``timeout``; the dial then has its whole budget.
    A full queue refuses the dial at once (``HandshakeBusy``): the dialer backs off.
    """

    async def open_gated(
        host: str,
        port: int,
        *,
        identity: Identity,
        expected: SpiffeId,
        timeout: float,  # noqa: ASYNC109 -- OpenLink's signature
        local_address: str | None = None,
        server_name: str | None = None,
    ) -> Link:
        with trio.move_on_after(timeout) as waiting:
            await gate.acquire()
        if waiting.cancelled_caught:  # a cancelled wait took no slot
            raise LinkTimeout(
                f"waited over {timeout}s for a TLS handshake slot"
                f" ({gate.running} running, limit {gate.limit})"
            )
        try:
            if server_name is None:  # (a dial function of before worker links takes none)
                return await dial(
                    host,
                    port,
                    identity=identity,
                    expected=expected,
                    timeout=timeout,
                    local_address=local_address,
                )
            return await dial(
                host,
                port,
                identity=identity,
                expected=expected,
                timeout=timeout,
                local_address=local_address,
                server_name=server_name,
            )
        finally:
            gate.release()

    return open_gated


def source_address_for(host: str) -> str | None:
    """``host`` if outgoing sockets should be bound to it (one IP address), else ``None``."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None  # a host name: let the kernel choose
    return None if ip.is_unspecified else str(ip)


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


def ids_of(peers: Mapping[str, PeerLinks]) -> dict[SpiffeId, list[str]]:
    """The peer keys by SPIFFE ID (several when a site's replicas present the same one)."""
    out: dict[SpiffeId, list[str]] = {}
    for key, state in peers.items():
        out.setdefault(state.spec.spiffe_id, []).append(key)
    return out


def connections_of(session: LinkSession) -> list[H2Connection]:
    """Both HTTP/2 connections of a link (the reverse one once it is set up)."""
    return [session.outer] if session.reverse is None else [session.outer, session.reverse]


@dataclass(eq=False)
class ExtraLink:
    """A link beside the peer's primary one, for stream slots only (never federation): one
    this side dialed for its pool (:mod:`overlay.peering.pool`), or one the peer dialed for
    its own."""

    session: LinkSession
    client: H2Connection
    dialed: bool
    draining: bool = False  # the pool is closing it: no new streams
    idle_since: float | None = None  # last seen without a stream by the pool (None: busy)
    #: A worker's own link that its dial loop keeps (its pool's first link, never closed idle).
    anchor: bool = False

    @property
    def live(self) -> bool:
        return not self.draining and not self.client.is_closing

    @property
    def pinned(self) -> bool:
        """A worker link: streams only, never federation, never a primary's heir."""
        return self.session.pinned


@dataclass
class PeerLinks:
    """One peer's link slots and what runs on them (the export's link, the import's scope)."""

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
    #: The export session on ``exporting`` (its acks give the ack lag), None when not exporting.
    export_session: ExportSession | None = None
    #: Counts from links that closed (a live link's own counts are added when read).
    closed_flow_stalls: int = 0
    abuse_goaways: int = 0  # links we closed with GOAWAY ENHANCE_YOUR_CALM (a flood)
    #: When an established link to the peer last broke (not drained): a replica that just
    #: lost a link is tried last (:func:`overlay.peering.replicas.pick_replica`).
    link_lost_at: float | None = None
    changed: trio.Event = field(default_factory=trio.Event)  # set (and replaced) per change
    #: Links beside the primary ones (see :class:`ExtraLink`), and how many are being dialed.
    extras: list[ExtraLink] = field(default_factory=list)
    opening: int = 0
    #: Set when the pool wants one more link (the pool's dialer replaces it once it acts).
    want_link: trio.Event = field(default_factory=trio.Event)
    #: Set to cut the dial loop's backoff short (the peer is known to be back); replaced
    #: by the loop each time it waits.
    redial: trio.Event = field(default_factory=trio.Event)

    def live(self) -> list[tuple[LinkSession, H2Connection]]:
        """Live links in order of preference: the dialed one first when we dial the peer."""
        slots = [(self.dialed, self.dialed_client), (self.accepted, self.accepted_client)]
        if not self.spec.dial:
            slots.reverse()
        return [(s, c) for s, c in slots if s is not None and c is not None and not c.is_closing]

    def outbound(self) -> H2Connection | None:
        """The connection this gateway sends on to the peer: any live link, whoever dialed;
        an extra link's when no primary one is up (the peer is down only when every link is),
        one this side dialed first (a worker's own link before those the peer's workers
        dialed)."""
        live = self.live()
        if live:
            return live[0][1]
        extras = [x for x in self.extras if x.live]
        extra = next((x for x in extras if x.dialed), None) or next(iter(extras), None)
        return None if extra is None else extra.client

    def control_outbound(self) -> H2Connection | None:
        """The connection a control stream (one of ``Peering.add_stream_path``'s) goes on: a
        live link that may carry one -- never a worker link, whose peer refuses them."""
        live = self.live()
        if live:
            return live[0][1]
        extra = next((x for x in self.extras if x.live and not x.pinned), None)
        return None if extra is None else extra.client

    def losing_link(self) -> bool:
        """Whether a link is breaking right now (its connection closes, the slot or the
        extras still hold it): the moment before ``link_lost_at`` is set.  Extra links count
        (a worker's links to a replica are all extra ones), unless the pool drains them."""
        if any(c is not None and c.is_closing for c in (self.dialed_client, self.accepted_client)):
            return True
        return any(x.client.is_closing and not x.draining for x in self.extras)

    def up_without(self, session: LinkSession) -> bool:
        """Whether a live link other than ``session`` (one going away) is up to the peer that
        the peer's export can resume on: worker links never carry it, so they do not count."""
        if any(s is not session for s, _c in self.live()):
            return True
        return any(x.live and not x.pinned and x.session is not session for x in self.extras)

    def sessions(self) -> list[LinkSession]:
        """The links in the slots and the extra ones (live or closing)."""
        primary = [s for s in (self.dialed, self.accepted) if s is not None]
        return primary + [x.session for x in self.extras]

    def fold_closed(self, session: LinkSession) -> None:
        """Keep the counts of a link that ended (its connections go with it)."""
        for conn in connections_of(session):
            stats = conn.statistics()
            self.closed_flow_stalls += stats.flow_control_stalls
            if stats.abuse_goaway:
                self.abuse_goaways += 1

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


#: Runs inside the link's nursery once the link is up: (peer, session, client connection).
OnUp = Callable[[PeerLinks, LinkSession, H2Connection], Awaitable[None]]
#: Serves one stream the peer opened: (peer, session, stream).
OnStream = Callable[[PeerLinks, LinkSession, H2Stream], Awaitable[None]]


class LinkKeeper:
    """The links of every configured peer; see the module docstring."""

    def __init__(
        self,
        *,
        identity: Identity,
        peers: Mapping[str, PeerLinks],
        settings: PeeringSettings,
        on_up: OnUp,
        on_stream: OnStream,
        on_change: Callable[[], None],
        clock: Callable[[], float] = trio.current_time,
        rng: Callable[[], float] = random.random,
        dial: OpenLink = open_link,
        worker: bool = False,
        server_name: str | None = None,
    ) -> None:
        self.identity = identity
        self.settings = settings
        #: A worker process's keeper: every link it dials or accepts is a worker link.
        self.worker = worker
        #: The TLS SNI of every dial (a worker names ``WORKER_LINK_SNI``), else none.
        self.server_name = server_name
        self._peers = peers
        self._by_id = ids_of(peers)
        self._on_up = on_up
        self._on_stream = on_stream
        self._on_change = on_change
        self._clock = clock
        self._rng = rng
        #: One gate for this gateway's handshakes, dialed and accepted (a storm of peers
        #: starting together must not start them all at once; see handshake_gate.py).
        self.gate = HandshakeGate(settings.max_concurrent_handshakes)
        #: How this gateway dials a peer (the pool's extra links too): through the gate.
        self.dial: OpenLink = gated(dial, self.gate)
        self.source_address: str | None = None

    def refresh_ids(self) -> None:
        """Re-read the peers' SPIFFE IDs after the peer set changed (a config reload): links
        from a removed peer are refused from now on, a new peer's are accepted."""
        self._by_id = ids_of(self._peers)

    async def serve_links(
        self,
        host: str,
        port: int,
        *,
        handoff: Handoff | None = None,
        task_status: trio.TaskStatus[Any],
    ) -> None:
        """Accept the configured peers on ``host:port`` (``task_status``: the listeners);
        ``handoff``: a worker's hook, see :func:`overlay.link.accept.serve_links`."""
        await serve_links(
            self.accept,
            host=host,
            port=port,
            identity=self.identity,
            authorize=lambda sid: sid in self._by_id,
            site_of=self._site_of,
            handshake_timeout=self.settings.handshake_timeout,
            gate=self.gate,
            handoff=handoff,
            task_status=task_status,
        )

    async def accept_stream(self, tcp: trio.SocketStream) -> None:
        """Accept a link on a connection a worker handed over (the supervisor's side): the
        listener's TLS handshake, checks and logs, then :meth:`accept`."""
        await accept_link_stream(
            tcp,
            self.accept,
            identity=self.identity,
            authorize=lambda sid: sid in self._by_id,
            handshake_timeout=self.settings.handshake_timeout,
            site_of=self._site_of,
            gate=self.gate,
        )

    def _site_of(self, spiffe_id: SpiffeId | None, host: str) -> str | None:
        """The configured peer a connection comes from, for log lines: by SPIFFE ID when it
        verified, else by source address (peers dial from their east-west address)."""
        if spiffe_id is not None:
            keys = self._by_id.get(spiffe_id)
            return None if not keys else self._peers[keys[0]].spec.name
        names = {st.spec.name for st in self._peers.values() if st.spec.host == host}
        return names.pop() if len(names) == 1 else None

    async def dial_peer(self, spec: PeerSpec) -> Link:
        """Dial ``spec``'s peer once (the dial loop's and the pool's dial): the configured
        timeout, this site's source address, a worker's SNI."""
        return await self.dial(
            spec.host,
            spec.port,
            identity=self.identity,
            expected=spec.spiffe_id,
            timeout=self.settings.connect_timeout,
            local_address=self.source_address,
            server_name=self.server_name,
        )

    async def dial_loop(self, state: PeerLinks) -> None:
        """Dial ``state``'s peer, run each link until it closes, redial on the backoff.

        A worker's loop keeps its one *anchor* worker link instead of the primary one: a
        pinned extra link (the pool's first), never in a primary slot.
        """
        spec = state.spec
        s = self.settings
        started = self._clock()
        while True:
            while state.dialed is not None:  # an extra link took the primary's place
                await state.changed.wait()
            established = False
            try:
                link = await self.dial_peer(spec)
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
                established = await self._run_session(
                    state, link, dialed=True, extra=self.worker, anchor=self.worker
                )
            if established:  # see the module docstring: a handshake alone proves nothing
                state.attempts = 0
            delay = s.backoff.delay(state.attempts, self._rng())
            state.attempts += 1
            state.redial = trio.Event()
            with trio.move_on_after(delay):
                await state.redial.wait()

    async def accept(self, link: Link) -> None:
        """Run a link a peer dialed to us until it closes."""
        keys = self._by_id.get(link.peer_id)
        if not keys:  # authorize() already refused unknown IDs; defensive
            return
        state = self._peers[keys[0]]
        rehome: Callable[[LinkSession], PeerLinks] | None = None
        if len(keys) > 1:  # replicas share the SPIFFE ID: see accept_replica
            states = [self._peers[k] for k in keys]
            host = link.remote_address.rpartition(":")[0]
            slots = [(st.spec.host, st.accepted is not None) for st in states]
            state = states[accept_replica(slots, host) or 0]

            def by_host(session: LinkSession) -> PeerLinks:
                # A worker link takes no slot: it belongs to the replica at its source host,
                # never to another one whose accepted slot happens to be free (known only
                # once it is set up, from its reverse connection's request).
                same = [st for st in states if st.spec.host == host]
                return same[0] if session.pinned and same and state not in same else state

            rehome = by_host
        await self._run_session(state, link, dialed=False, rehome=rehome)

    async def run_extra(self, state: PeerLinks, link: Link) -> bool:
        """Run an extra link this side dialed for its pool until it closes; return whether
        it was ever established."""
        return await self._run_session(state, link, dialed=True, extra=True)

    async def _run_session(
        self,
        state: PeerLinks,
        link: Link,
        *,
        dialed: bool,
        extra: bool = False,
        anchor: bool = False,
        rehome: Callable[[LinkSession], PeerLinks] | None = None,
    ) -> bool:
        """Run one link until it closes; return whether it was ever established.

        ``extra``: a link this side dialed for its pool (the peer learns it from the reverse
        connection's request; a link the peer dialed says it is one once set up).  An extra
        link carries streams only: no export, and it never takes a primary slot.  In a
        worker every link is a *pinned* one (a worker link): an extra link that never takes
        a primary slot either; ``anchor``: the one its dial loop keeps (not the pool's).
        ``rehome``: which replica an accepted link belongs to, once set up (see ``accept``).
        """
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
            # A peer bringing up many links at once may answer its first PING late; it had
            # connect_timeout for its handshake, and gets as long for that (liveness.py).
            first_ping_timeout=s.connect_timeout,
            extra=extra,
            pinned=self.worker,
            accept_extra=None if dialed else lambda: self._may_accept_extra(state),
        )
        holder.append(session)
        slot: list[ExtraLink] = []

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
                finally:
                    if extra and not anchor:  # the pool counted it as being opened
                        state.opening -= 1
                if rehome is not None:  # (the stream handler reads ``state`` from here on)
                    state = rehome(session)
                state.last_error = None
                if session.extra:  # streams only, until it takes the primary's place
                    slot.append(ExtraLink(session, client, dialed=dialed, anchor=anchor))
                    self._set_extra(state, slot[0], add=True)
                    log.info(
                        "%s link %s %s is up (%d links)",
                        "worker" if session.pinned else "extra",
                        "to" if dialed else "from",
                        state.spec.name,
                        len(state.extras) + len(state.live()),
                    )
                    # The export waits until this link is the one to export on (never while
                    # it is an extra one; see _set_link).  A worker link never carries it.
                    if not session.pinned:
                        nursery.start_soon(self._on_up, state, session, client)
                else:
                    self._set_link(state, dialed, session, client)
                    log.info(
                        "link %s %s is up (%s, %s)",
                        "to" if dialed else "from",
                        state.spec.name,
                        link.peer_id,
                        link.remote_address,
                    )
                    nursery.start_soon(self._on_up, state, session, client)
        except* TunnelError as group:  # the link died under one of its tasks: it is down
            log.debug("link with %s ended: %s", state.spec.name, first_leaf(group))
        finally:
            # A peer that restarted may already have a newer link of the same direction up
            # (its new inbound link can arrive before the PING deadline retires this one):
            # only clear the slot if it still holds this session.
            current = state.dialed if dialed else state.accepted
            if slot and slot[0] in state.extras:
                self._set_extra(state, slot[0], add=False)
            elif current is session or current is None:
                self._set_link(state, dialed, None, None)
            state.fold_closed(session)
            reason = session.outer.close_reason
            if session.established and not (slot and slot[0].draining):
                state.link_lost_at = self._clock()
            if (slot or extra) and not anchor:
                # The pool closed it (drained, idle), the peer refused it, or it died: the
                # peer stays up while another link is, so this is no "is down".
                log.info(
                    "%s link %s %s closed: %s",
                    "worker" if session.pinned else "extra",
                    "to" if dialed else "from",
                    state.spec.name,
                    "drained" if slot and slot[0].draining else reason,
                )
            else:
                self._log_down(state, session, dialed=dialed)
        return session.established

    def _log_down(self, state: PeerLinks, session: LinkSession, *, dialed: bool) -> None:
        """Say that a primary link went down (and why it likely did, if never established)."""
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
            log.info("link %s %s is down: %s", "to" if dialed else "from", state.spec.name, reason)

    def _may_accept_extra(self, state: PeerLinks) -> bool:
        """Whether the peer may open one more extra link to us (a bound on a misbehaving
        peer's connections; see ``PeeringSettings.max_accepted_extras``)."""
        accepted = sum(1 for x in state.extras if not x.dialed)
        if accepted < self.settings.max_accepted_extras:
            return True
        log.warning(
            "extra link from %s refused: it has %d extra (pool and worker) links to us already",
            state.spec.name,
            accepted,
        )
        return False

    def _set_extra(self, state: PeerLinks, extra: ExtraLink, *, add: bool) -> None:
        was_up = state.outbound() is not None
        if add:
            state.extras.append(extra)
        elif extra in state.extras:
            state.extras.remove(extra)
        self._up_changed(state, was_up)

    def _set_link(
        self,
        state: PeerLinks,
        dialed: bool,
        session: LinkSession | None,
        client: H2Connection | None,
    ) -> None:
        was_up = state.outbound() is not None
        if session is None:
            # The primary link went: a live extra link of the same direction takes its place
            # (and the export with it), so federation goes on while any link is up.  Never a
            # worker link (pinned): the primary's redial takes the slot back.
            heir = next(
                (x for x in state.extras if x.dialed == dialed and x.live and not x.pinned), None
            )
            if heir is not None:
                state.extras.remove(heir)
                session, client = heir.session, heir.client
                log.info(
                    "extra link %s %s takes the primary's place",
                    "to" if dialed else "from",
                    state.spec.name,
                )
        if dialed:
            state.dialed, state.dialed_client = session, client
        else:
            state.accepted, state.accepted_client = session, client
        self._up_changed(state, was_up)

    def _up_changed(self, state: PeerLinks, was_up: bool) -> None:
        is_up = state.outbound() is not None
        if is_up and (not was_up or state.up_since is None):
            state.up_since = self._clock()
            state.links_established += 1
        elif not is_up:  # also when the link was already closing (was_up read False)
            state.up_since = None
        state.notify()
        self._on_change()
