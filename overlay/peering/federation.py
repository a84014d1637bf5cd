"""Federation lifetimes: which link a peer's export runs on, and the import of its catalog.

The export to a peer runs on one link at a time (there is never a second exporter of the same
catalog): it starts on the link we send on and stays there until that link goes (or is
replaced in its slot by a newer link of the same direction), then moves to the remaining live
link.  It runs in the link's nursery (:class:`~overlay.peering.links.LinkKeeper` starts it), so
it ends with the link.

Each replica of a peer site is a peer of its own here: it gets our export, and its export is
kept as its own copy in the import table (keyed by ``PeerSpec.key``), which presents the site
merged from the copies (:mod:`overlay.federation.import_merge`).

Imports: a peer's export stream may arrive on either link.  The newest stream from a peer wins
(the previous one is cancelled), because only one import session per origin can be applied to
the import table.  When the stream carrying a peer's export ends and no other link to the peer
is up, the peer's imports turn stale (kept for ``import_grace`` seconds, then withdrawn by
:mod:`overlay.peering.routes`); the next snapshot restores them.  While another link is up
(an extra link of the peer's pool), they stay fresh: the export resumes on it at once.

A federation failure costs the link it ran on (the link is closed, the dialer redials), never
the gateway.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import trio

from discovery.snapshot import Catalog
from discovery.watch import Watch
from foundation.errors import H2_REFUSED_STREAM, first_leaf
from overlay.federation.config import ExportConfig
from overlay.federation.export import ExportSession
from overlay.federation.export_routes import RouteTexts
from overlay.federation.import_ import ImportTable, ImportUpdate
from overlay.federation.protocol import FederationProtocolError
from overlay.federation.stream import (
    FEDERATION_PATH,
    FEDERATION_PATH_V2,
    run_export,
    serve_import,
)
from overlay.h2.connection import H2Connection
from overlay.h2.stream import H2Stream, TunnelError
from overlay.link.session import LinkSession
from overlay.peering.links import PeerLinks

log = logging.getLogger("isthmus.peering")

StreamHandler = Callable[[str, H2Stream], Any]  # (peer site, stream) -> awaitable

#: The ``:path`` of every federation stream (refused on a worker link).
_FEDERATION = frozenset({FEDERATION_PATH.encode(), FEDERATION_PATH_V2.encode()})


class PeerFederation:
    """Exports this site's catalog to each peer and imports theirs; see the module docstring."""

    def __init__(
        self,
        *,
        local_site: str,
        catalog: Watch[Catalog],
        export_rules: Sequence[ExportConfig],
        imports: Watch[ImportTable],
        ack_timeout: float,
        on_change: Callable[[], None],
        stream_handler: StreamHandler | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.local_site = local_site
        self.catalog = catalog
        # A watch, so a config reload can swap the rules under live export streams.
        self.export_rules: Watch[tuple[ExportConfig, ...]] = Watch(tuple(export_rules))
        # The routes this site owns, attached to what it exports (federation version 2); a
        # watch too, so a reload re-exports the changed ones on the live streams.
        self.export_routes: Watch[RouteTexts] = Watch({})
        self.imports = imports
        self._ack_timeout = ack_timeout
        self._on_change = on_change
        self._stream_handler = stream_handler
        self._clock = clock
        #: Control streams other than the export, by ``:path`` (the fleet document's push):
        #: served here, before the traffic handler, so a data-path stream pays no extra check.
        self.paths: dict[bytes, StreamHandler] = {}

    async def export_when_chosen(
        self, state: PeerLinks, session: LinkSession, client: H2Connection
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

    async def _export(self, state: PeerLinks, session: LinkSession, client: H2Connection) -> None:
        site = state.spec.name

        def on_session(export: ExportSession) -> None:
            state.export_session = export

        try:
            await run_export(
                client,
                local_site=self.local_site,
                peer_site=site,
                catalog=self.catalog,
                rules=self.export_rules,
                ack_timeout=self._ack_timeout,
                clock=self._clock,
                on_session=on_session,
                routes=self.export_routes,
            )
        except* FederationProtocolError as group:
            log.warning("export to %s failed, closing the link: %s", site, first_leaf(group))
            state.last_error = f"export: {first_leaf(group)}"
        except* TunnelError as group:
            log.debug("export stream to %s ended: %s", site, first_leaf(group))
        except* Exception as group:  # a bug must cost this link, never the gateway
            log.error("export to %s failed unexpectedly", site, exc_info=first_leaf(group))
        finally:
            state.export_session = None
            with trio.CancelScope(shield=True):
                await session.aclose()

    async def on_stream(self, state: PeerLinks, session: LinkSession, stream: H2Stream) -> None:
        """Serve one stream the peer opened: its export, else traffic for the stream handler.

        A worker link (``session.pinned``) carries traffic only: a federation or control
        stream on it is refused with a stream reset (REFUSED_STREAM) and the link stays up --
        the peer's export and control streams belong on its primary link, and a worker has no
        catalog of its own to import into.
        """
        path = dict(stream.request_headers).get(b":path")
        if session.pinned and path is not None and (path in _FEDERATION or path in self.paths):
            log.warning(
                "refused a %r stream from %s on a worker link (traffic only)",
                path.decode("ascii", "replace")[:64],
                state.spec.name,
            )
            stream.reset(H2_REFUSED_STREAM)
            return
        if path == FEDERATION_PATH_V2.encode():
            await self._import(state, session, stream, routes=True)
        elif path == FEDERATION_PATH.encode():  # a peer from before routes
            await self._import(state, session, stream, routes=False)
        elif path is not None and (control := self.paths.get(path)) is not None:
            await control(state.spec.name, stream)
        elif self._stream_handler is not None:
            await self._stream_handler(state.spec.name, stream)
        else:
            await stream.send_headers([(":status", "404")], end_stream=True)

    async def _import(
        self, state: PeerLinks, session: LinkSession, stream: H2Stream, *, routes: bool
    ) -> None:
        site = state.spec.name
        if state.import_scope is not None:
            state.import_scope.cancel()  # the newest export stream from a peer wins
        scope = trio.CancelScope()
        state.import_scope = scope

        def on_update(update: ImportUpdate) -> None:
            table = self.imports.latest.apply(update, self._clock(), replica=state.spec.key)
            self.imports.publish(table)
            self._on_change()

        failed = False
        try:
            with scope:
                await serve_import(stream, peer_site=site, on_update=on_update, routes=routes)
        except* FederationProtocolError as group:
            log.warning("bad federation input from %s, disconnecting: %s", site, first_leaf(group))
            state.last_error = f"import: {first_leaf(group)}"
            failed = True
        except* TunnelError as group:
            log.debug("import stream from %s ended: %s", site, first_leaf(group))
        except* Exception as group:  # a bug must cost this link, never the gateway
            log.error("import from %s failed unexpectedly", site, exc_info=first_leaf(group))
            failed = True
        finally:
            if state.import_scope is scope:
                state.import_scope = None
                # While another link to the peer is up its export resumes there at once (an
                # extra link takes the primary's place): the imports stay fresh meanwhile.
                if failed or not state.up_without(session):
                    table = self.imports.latest.link_down(
                        site, self._clock(), replica=state.spec.key
                    )
                    self.imports.publish(table)
                    self._on_change()
        if failed:
            with trio.CancelScope(shield=True):
                await session.aclose()
