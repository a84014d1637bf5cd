"""The control site: keep the fleet document, apply it here, push it over the links.

Theory of operation
-------------------
:class:`FleetAuthority` owns the store (:class:`~gateway.fleet.site_store.SiteStore`), the
latest document as a :class:`~discovery.watch.Watch`, and each replica's answer
(:class:`~gateway.fleet.replica_answers.SiteAnswers`).  A write (``isthmus apply``/``rollback``
on the fleet API) is compare-and-set against the version the writer read, stored (history first),
published, and applied here like any site's version.  Writes are serialised by one lock.

Per replica of every peer site (a site of one gateway has one), one task keeps one push
stream open (``POST`` :data:`FLEET_PATH`) on that replica's own link -- never the site's
spread over its replicas, which would reach one of them only: it sends the latest version
when nothing is in flight and the replica has not answered it yet, records the ack or nack,
and waits for the next version (push, not poll: a write wakes every replica's task at once).
A reply not received within ``ack_timeout_s`` ends the stream as wedged.  While a replica has
no link the task waits for its links to change (an event of the peering), and reports the
replica ``unreachable`` since then; when a stream fails it retries after exponential backoff
with full jitter.  A fresh stream starts a fresh epoch and pushes the current version at once,
so a replica that was cut off or restarted catches up when its link is back.  Peers and
replicas added by a reload are picked up within :data:`PEER_RESCAN_S`.
"""

from __future__ import annotations

import contextlib
import logging
import random
import secrets
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol

import trio

from discovery.backoff import Backoff
from discovery.watch import Watch
from foundation.errors import first_leaf
from gateway.config.fleet import FleetConfig
from gateway.fleet.document import FleetDocument
from gateway.fleet.replica_answers import SiteAnswers
from gateway.fleet.site_core import PushSession
from gateway.fleet.site_store import SiteStore
from gateway.fleet.site_wire import (
    CONTENT_TYPE,
    FLEET_PATH,
    decode_reply,
    encode_push,
)
from gateway.fleet.state import FleetState
from overlay.federation.protocol import FederationProtocolError, FrameReader
from overlay.h2.stream import TunnelError
from overlay.peering.pool import StreamOpener

log = logging.getLogger("isthmus.fleet")

READ_SIZE = 64 * 1024
PEER_RESCAN_S = 5.0
#: Longest wait for a peer's links to change before looking again (the event normally wakes).
LINK_WAIT_S = 5.0
Apply = Callable[[FleetDocument], Awaitable[object]]


class ReplicaLinks(Protocol):
    """What the push needs of the peering (:class:`~overlay.peering.peers.Peering`): each
    replica of a site, its own link, and an event at its next link change."""

    def replicas(self, site: str) -> tuple[str, ...]: ...

    def replica_outbound(self, site: str, replica: str) -> StreamOpener | None: ...

    def replica_changed(self, site: str, replica: str) -> trio.Event | None: ...


class FleetPushRefused(FederationProtocolError):
    """The site answered the push stream with something other than 200 (e.g. 403: it does
    not take this site as its authority)."""


class FleetAuthority:
    """The control site's fleet document and its push to every peer (module docstring)."""

    def __init__(
        self,
        *,
        site: str,
        store: SiteStore,
        initial: FleetDocument,
        state: FleetState,
        apply: Apply,
        config: FleetConfig,
        wall_clock: Callable[[], float],
        rng: random.Random | None = None,
    ) -> None:
        self.site = site
        self.store = store
        self.document: Watch[FleetDocument] = Watch(initial)
        self.state = state
        self.apply = apply
        self.config = config
        self.wall_clock = wall_clock
        self.answers = SiteAnswers()
        self.random = rng or random.Random()
        self.backoff = Backoff(base_s=config.backoff_base_s, cap_s=config.backoff_cap_s)
        self._lock = trio.Lock()
        self._refused: dict[str, str] = {}  # the last refusal logged per replica
        state.sites = self.sites_view

    def sites_view(self) -> list[dict[str, Any]]:
        return self.answers.json(self.document.latest.version)

    # -- writes ---------------------------------------------------------------------------
    async def current(self) -> FleetDocument:
        return self.document.latest

    async def history(self) -> list[str]:
        async with self._lock:
            return await trio.to_thread.run_sync(self.store.history)

    async def load_version(self, version: str) -> FleetDocument:
        async with self._lock:
            return await trio.to_thread.run_sync(self.store.load_version, version)

    async def write(self, doc: FleetDocument, expect: str | None) -> FleetDocument:
        """Make ``doc`` the fleet's document if the current version is ``expect``; the one it
        replaced.  Raises :class:`~gateway.fleet.authority.Conflict` (another write won) or
        :class:`~gateway.fleet.authority.AuthorityError`."""
        async with self._lock:
            old = await trio.to_thread.run_sync(self.store.write, doc, expect)
            self.document.publish(doc)  # wakes every peer's push task
            log.info("fleet version %s written (was %s)", doc.version, old.version)
        await self.apply_here(doc)
        return old

    async def apply_here(self, doc: FleetDocument) -> None:
        self.state.record_read(doc.version)
        if doc.version == self.state.version:
            return
        try:
            await self.apply(doc)
        except Exception:  # a bug costs this version here only, never the gateway
            log.exception("fleet version %s: applying it here failed", doc.version)

    # -- push -----------------------------------------------------------------------------
    async def serve(
        self,
        peering: ReplicaLinks,
        peer_names: Callable[[], Sequence[str]],
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Push to every replica of every peer until cancelled (peers and replicas added
        later are picked up)."""
        running: set[tuple[str, str]] = set()
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                keys = [(name, r) for name in peer_names() for r in peering.replicas(name)]
                self.answers = self.answers.keep_only(keys)
                for key in keys:
                    if key not in running:
                        running.add(key)
                        nursery.start_soon(self._serve_replica, peering, key, running)
                await trio.sleep(PEER_RESCAN_S)

    async def _serve_replica(
        self, peering: ReplicaLinks, key: tuple[str, str], running: set[tuple[str, str]]
    ) -> None:
        site, replica = key
        try:
            attempt = 0
            while True:
                opener = peering.replica_outbound(site, replica)
                if opener is None:
                    self.answers = self.answers.disconnected(site, replica, self.wall_clock())
                    event = peering.replica_changed(site, replica)
                    if event is None:
                        return  # no longer a replica of a peer
                    with trio.move_on_after(LINK_WAIT_S):
                        await event.wait()
                    continue
                answered = await self._push_over(opener, site, replica)
                self.answers = self.answers.disconnected(site, replica, self.wall_clock())
                attempt = 0 if answered else attempt + 1
                await trio.sleep(self.backoff.delay(attempt, self.random.random()))
        finally:
            running.discard(key)

    async def _push_over(self, opener: StreamOpener, site: str, replica: str) -> bool:
        """Run one push stream to ``replica`` of ``site`` until it fails; whether it
        answered."""
        where = f"{site} ({replica})"
        answered = False

        def on_answer() -> None:
            nonlocal answered
            answered = True

        try:
            await self._run_stream(opener, site, replica, on_answer)
        except* FleetPushRefused as group:
            # Once per site and reason (a peer that takes no pushes from us answers 403 at
            # every retry; the retries back off to backoff_cap_s).
            reason = str(first_leaf(group))
            level = logging.DEBUG if self._refused.get(where) == reason else logging.WARNING
            self._refused[where] = reason
            log.log(level, "fleet push to %s refused: %s", where, reason)
        except* FederationProtocolError as group:
            log.warning("fleet push to %s failed: %s", where, first_leaf(group))
        except* TunnelError as group:
            log.debug("fleet push stream to %s ended: %s", where, first_leaf(group))
        except* trio.BrokenResourceError as group:
            log.debug("fleet push stream to %s ended: %s", where, first_leaf(group))
        except* Exception as group:  # a bug costs this stream, never the gateway
            log.error("fleet push to %s failed unexpectedly", where, exc_info=first_leaf(group))
        return answered

    async def _run_stream(
        self, opener: StreamOpener, site: str, replica: str, on_answer: Callable[[], None]
    ) -> None:
        where = f"{site} ({replica})"
        stream = await opener.open_stream(
            [
                (":method", "POST"),
                (":scheme", "https"),
                (":authority", site),
                (":path", FLEET_PATH),
                ("content-type", CONTENT_TYPE),
                ("isthmus-site", self.site),
            ]
        )
        try:
            status = None
            with trio.move_on_after(self.config.ack_timeout_s):
                status = dict(await stream.response_headers()).get(b":status")
            if status is None:
                raise FederationProtocolError(f"{site} did not answer the push stream")
            if status != b"200":
                raise FleetPushRefused(f"{site} answered the push stream with {status!r}")
            self.answers = self.answers.connected(site, replica)
            self._refused.pop(where, None)
            session = PushSession(self.site, secrets.token_hex(8))
            send_kick, receive_kick = trio.open_memory_channel[None](1)

            def kick() -> None:
                with contextlib.suppress(trio.WouldBlock):
                    send_kick.send_nowait(None)

            async def read_replies() -> None:
                reader = FrameReader(decode_reply)
                while True:
                    data = await stream.receive_some(READ_SIZE)
                    if not data:
                        reader.close()
                        raise FederationProtocolError(f"{site} ended the fleet push stream")
                    for reply in reader.feed(data):
                        answer = session.receive(reply)
                        self.answers = self.answers.answered(
                            site, replica, answer, self.wall_clock()
                        )
                        on_answer()
                        if answer.applied:
                            log.info("fleet version %s applied at %s", answer.version, where)
                        else:
                            log.warning(
                                "fleet version %s rejected at %s: %s",
                                answer.version,
                                where,
                                answer.reason,
                            )
                    kick()

            async def watch_document() -> None:
                seen = self.document.count
                while True:
                    seen, _ = await self.document.wait_newer(seen)
                    kick()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_replies)
                nursery.start_soon(watch_document)
                seen = -1
                while True:
                    if self.document.count != seen:
                        seen = self.document.count
                        session.set_document(self.document.latest)
                    push = session.next_message(trio.current_time())
                    if push is not None:
                        await stream.send_all(
                            encode_push(push, max_document_bytes=self.config.max_document_bytes)
                        )
                    sent = session.oldest_unacked_at()
                    timeout = (
                        float("inf")
                        if sent is None
                        else sent + self.config.ack_timeout_s - trio.current_time()
                    )
                    if timeout <= 0:
                        raise FederationProtocolError(
                            f"{site} did not answer a fleet push in {self.config.ack_timeout_s}s"
                        )
                    with trio.move_on_after(timeout):
                        await receive_kick.receive()
        finally:
            with trio.CancelScope(shield=True):
                await stream.aclose()
