"""A site's side of the fleet push: take versions from the authority site only, apply, answer.

The authority opens one long-lived stream (``POST`` :data:`~gateway.fleet.site_wire.FLEET_PATH`)
on its link to this site; each frame is one version of the document, each answered with an
``ack`` (this site runs it) or a ``nack`` whose reason lists the problems (it rejected it; the
version that runs keeps serving).  Versions are handled one at a time: the next frame is read
only after the previous one is applied or rejected and answered (one version in flight).

Who may push: the link's peer was verified per trust domain (its chain against the bundle of
its own trust domain) and named by its exact SPIFFE ID among the ``[[peers]]``; a push stream
is taken only from the peer named ``[fleet] authority_site``.  A push from any other peer is
answered 403 and logged.  The newest stream from the authority wins (a new link replaces the
old one's stream).  While no stream from the authority is up, the site keeps the version it
runs and reports ``authority <site> unreachable since <time>`` (``/fleet``, ``status --fleet``,
``isthmus_fleet_authority_up 0``); the authority pushes its current version as soon as a link
is back, so the site catches up.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import trio

from foundation.errors import first_leaf
from gateway.config.errors import Problem
from gateway.fleet.document import FleetDocument
from gateway.fleet.site_core import ReceiveSession, decide, rejection_reason, reply_for
from gateway.fleet.site_store import SiteStore
from gateway.fleet.site_wire import (
    CONTENT_TYPE,
    FleetPush,
    decode_push,
    encode_reply,
    max_frame_bytes,
)
from gateway.fleet.state import FleetState, iso_time
from overlay.federation.protocol import FederationProtocolError, FrameReader
from overlay.h2.stream import H2Stream, TunnelError

log = logging.getLogger("isthmus.fleet")

READ_SIZE = 64 * 1024
Apply = Callable[[FleetDocument], Awaitable[object]]


class FleetInbox:
    """Serves the authority's push streams at a site with ``[fleet] source = "site"``."""

    def __init__(
        self,
        *,
        authority_site: str,
        state: FleetState,
        apply: Apply,
        max_document_bytes: int,
        max_resources: int,
        wall_clock: Callable[[], float],
        ready: trio.Event | None = None,
        cache: SiteStore | None = None,
    ) -> None:
        self.ready = ready
        self.cache = cache
        self.authority_site = authority_site
        self.state = state
        self.apply = apply
        self.max_document_bytes = max_document_bytes
        self.max_resources = max_resources
        self.wall_clock = wall_clock
        self._scope: trio.CancelScope | None = None
        self.refused_total = 0
        self._cut(wall_clock())  # until the authority's first stream arrives

    def _cut(self, now: float) -> None:
        self.state.record_error(
            f"authority {self.authority_site} unreachable since {iso_time(now)}"
        )

    async def __call__(self, peer_site: str, stream: H2Stream) -> None:
        if peer_site != self.authority_site:
            self.refused_total += 1
            log.warning(
                "fleet push from peer %s refused: only %s (the [fleet] authority_site) may push",
                peer_site,
                self.authority_site,
            )
            await stream.send_headers([(":status", "403")], end_stream=True)
            return
        if self.ready is not None:
            await self.ready.wait()  # the gateway is fully up (the authority waits for our 200)
        if self._scope is not None:
            self._scope.cancel()  # the newest stream from the authority wins
        scope = self._scope = trio.CancelScope()
        try:
            with scope:
                await self._serve(stream)
        except* FederationProtocolError as group:
            log.warning("bad fleet push from %s: %s", peer_site, first_leaf(group))
        except* TunnelError as group:
            log.debug("fleet push stream from %s ended: %s", peer_site, first_leaf(group))
        finally:
            if self._scope is scope:
                self._scope = None
                self._cut(self.wall_clock())
                log.warning("fleet: the push stream from %s is down", peer_site)

    async def _serve(self, stream: H2Stream) -> None:
        await stream.send_headers([(":status", "200"), ("content-type", CONTENT_TYPE)])
        if self.state.error is not None:
            log.info("fleet: authority %s is connected", self.authority_site)
        self.state.error = None
        session = ReceiveSession(self.authority_site)
        reader = FrameReader(
            decode_push, max_message_bytes=max_frame_bytes(self.max_document_bytes)
        )
        while True:
            data = await stream.receive_some(READ_SIZE)
            if not data:
                reader.close()
                return
            for push in reader.feed(data):
                session.receive(push)
                rejected = await self._handle(push)
                await stream.send_all(encode_reply(reply_for(push, rejected)))

    async def _remember(self, doc: FleetDocument) -> None:
        """Keep the version applied, to restart on (a failure costs the cache, logged)."""
        assert self.cache is not None
        try:
            await trio.to_thread.run_sync(self.cache.remember, doc)
        except OSError as err:
            log.warning(
                "fleet: cannot keep version %s in %s: %s", doc.version, self.cache.root, err
            )

    async def _handle(self, push: FleetPush) -> str | None:
        """Apply ``push`` or reject it; the nack's reason, or None when this site runs it."""
        state = self.state
        decision, doc, version, problems = decide(
            push,
            state.version,
            max_bytes=self.max_document_bytes,
            max_resources=self.max_resources,
        )
        state.record_read(version)
        if decision == "reject" or doc is None:
            state.record_rejected(version, problems, self.wall_clock())
            log.warning(
                "fleet version %s rejected, %d problem(s); version %s keeps running",
                version,
                len(problems),
                state.version,
            )
            for problem in problems:
                log.warning("fleet version %s: %s", version, problem.render(None))
            return rejection_reason(version, problems)
        if decision == "apply":
            try:
                # Shielded: a newer stream from the authority cancels this one, never a reload
                # half-way (the reload is bounded: a file read and a validation).
                with trio.CancelScope(shield=True):
                    await self.apply(doc)
            except Exception:  # a bug costs this version only, never the gateway (as SIGHUP)
                log.exception("fleet version %s: applying it failed", version)
                problem = Problem("fleet", "applying it failed (see the gateway's log)")
                state.record_rejected(version, (problem,), self.wall_clock())
        if state.version == version:
            if decision == "apply" and self.cache is not None:
                await self._remember(state.document)
            return None
        rejection = state.rejected
        found = rejection.problems if rejection is not None and rejection.version == version else ()
        return rejection_reason(version, found)
