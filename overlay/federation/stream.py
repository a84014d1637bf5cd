"""Federation over HTTP/2: the trio adapters around the pure export and import sessions.

The exporter opens one long-lived stream (``POST`` :data:`FEDERATION_PATH`) on its
client-role connection to the peer: the request body carries snapshot and delta frames, the
response body carries acks and nacks.  So each direction of federation is one stream, opened by
the side whose catalog it carries, on whichever link that side sends on.

Theory of operation (exporter)
------------------------------
Two tasks share one :class:`~overlay.federation.export.ExportSession`:

* the *reader* feeds reply frames to the session and kicks the writer;
* the *writer* waits for a kick (a new catalog snapshot, a reply, or the ack timer), folds the
  latest catalog into the peer's export view -- incrementally, by the services whose endpoint
  maps changed -- and sends what the session asks for.

A reply that is not acked within ``ack_timeout`` means the peer (or the link) is wedged:
:class:`FederationTimeout` is raised and the owner closes the link, which redials and starts a
fresh session (a full snapshot).  Any :class:`FederationProtocolError` ends the stream the same
way.  The importer side is a plain loop: frames in, session, replies out, updates to a callback.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
from collections.abc import Callable, Sequence

import trio

from discovery.pacing import paced
from discovery.snapshot import Catalog
from discovery.steps import SLICE_ITEMS
from discovery.watch import Watch
from overlay.federation.config import ExportConfig
from overlay.federation.export import ExportSession
from overlay.federation.export_feed import PeerExport
from overlay.federation.export_routes import RoutedView, RouteTexts
from overlay.federation.import_ import ImportSession, ImportUpdate
from overlay.federation.protocol import (
    MAX_MESSAGE_BYTES,
    FederationProtocolError,
    FrameDecoder,
    encode_message,
)
from overlay.h2.connection import H2Connection
from overlay.h2.stream import H2Stream

log = logging.getLogger("isthmus.federation")

FEDERATION_PATH = "/isthmus.federation.v1/export"
#: Version 2: services carry the owner's routes.  An exporter asks for it first and falls back
#: to version 1 when the peer does not answer it with 200 (a gateway from before routes).
FEDERATION_PATH_V2 = "/isthmus.federation.v2/export"
#: Bytes of federation frames (exports one way, acks the other) taken from the stream per read.
FRAME_READ_SIZE = 64 * 1024
ACK_TIMEOUT_S = 30.0


class FederationTimeout(FederationProtocolError):
    """The peer did not acknowledge an export in time."""


async def run_export(
    client: H2Connection,
    *,
    local_site: str,
    peer_site: str,
    catalog: Watch[Catalog],
    rules: Sequence[ExportConfig] | Watch[tuple[ExportConfig, ...]],
    ack_timeout: float = ACK_TIMEOUT_S,
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    clock: Callable[[], float] = trio.current_time,
    on_session: Callable[[ExportSession], None] | None = None,
    routes: Watch[RouteTexts] | None = None,
) -> None:
    """Export this site's consented catalog to ``peer_site`` until the stream fails.

    ``routes``: the route texts to attach to the exported services (protocol version 2,
    :mod:`overlay.federation.export_routes`); a new value re-exports the services whose
    routes changed on the same stream.  A peer that refuses the version-2 path gets version
    1, without routes.

    ``on_session`` hears of the export session once it exists (for its statistics: versions
    sent and acknowledged, the oldest unacknowledged batch).

    ``rules`` may be a watch: new rules (a config reload) recompute the view and send the
    difference on the same stream, so the link and its tunnels are untouched.

    Always raises when it ends: the stream reset (``StreamReset``/``ConnectionGone``), a
    protocol error, or :class:`FederationTimeout`.
    """
    path = FEDERATION_PATH if routes is None else FEDERATION_PATH_V2
    stream = await _open_export(client, local_site, peer_site, path)
    if stream is None:
        log.info("%s does not take federation version 2: exporting without routes", peer_site)
        routes = None
        stream = await _open_export(client, local_site, peer_site, FEDERATION_PATH)
        if stream is None:
            raise FederationProtocolError("peer refused the export stream")
    try:
        session = ExportSession(
            local_site, secrets.token_hex(8), max_message_bytes=max_message_bytes
        )
        if on_session is not None:
            on_session(session)
        rule_watch = rules if isinstance(rules, Watch) else Watch(tuple(rules))
        export = PeerExport(peer_site, rule_watch.latest)
        rules_applied = rule_watch.count
        routed = RoutedView()
        route_watch: Watch[RouteTexts] = routes if routes is not None else Watch({})
        routes_applied = route_watch.count
        send_kick, receive_kick = trio.open_memory_channel[None](1)

        def kick() -> None:
            # A kick already pending covers this one too: one wake-up folds in everything.
            with contextlib.suppress(trio.WouldBlock):
                send_kick.send_nowait(None)

        async def read_replies() -> None:
            decoder = FrameDecoder(max_message_bytes=max_message_bytes)
            while True:
                data = await stream.receive_some(FRAME_READ_SIZE)
                if not data:
                    decoder.close()
                    raise FederationProtocolError("peer ended the federation stream")
                for msg in decoder.feed(data):
                    session.receive(msg)
                kick()

        async def watch_catalog() -> None:
            seen = -1
            while True:
                seen, _ = await catalog.wait_newer(seen)
                kick()

        async def watch_rules() -> None:
            seen = rules_applied
            while True:
                seen, _ = await rule_watch.wait_newer(seen)
                kick()

        async def watch_routes() -> None:
            seen = routes_applied
            while True:
                seen, _ = await route_watch.wait_newer(seen)
                kick()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_replies)
            nursery.start_soon(watch_catalog)
            nursery.start_soon(watch_rules)
            if routes is not None:
                nursery.start_soon(watch_routes)
            applied = -1
            while True:
                if route_watch.count != routes_applied:
                    routes_applied = route_watch.count
                    changed = routed.update(export.view, None, route_watch.latest)
                    session.set_view(routed.view, changed)
                if rule_watch.count != rules_applied:
                    rules_applied = rule_watch.count
                    export.set_rules(rule_watch.latest)
                    applied = -1  # recompute the whole view under the new rules
                if catalog.count != applied:
                    applied = catalog.count
                    update = export.update_steps(catalog.latest, clock(), slice_items=SLICE_ITEMS)
                    changed = await paced(update)  # requests run between slices
                    if changed is None or changed:
                        changed = routed.update(export.view, changed, route_watch.latest)
                        session.set_view(routed.view, changed)
                while (msg := session.next_message(clock())) is not None:
                    await stream.send_all(encode_message(msg, max_message_bytes=max_message_bytes))
                oldest = session.oldest_unacked_at()
                timeout = float("inf") if oldest is None else oldest + ack_timeout - clock()
                if timeout <= 0:
                    raise FederationTimeout(f"{peer_site} did not acknowledge in {ack_timeout}s")
                with trio.move_on_after(timeout):
                    await receive_kick.receive()
    finally:
        with trio.CancelScope(shield=True):
            await stream.aclose()


async def _open_export(
    client: H2Connection, local_site: str, peer_site: str, path: str
) -> H2Stream | None:
    """The export stream on ``path``, or None when the peer answers anything but 200."""
    stream = await client.open_stream(
        [
            (":method", "POST"),
            (":scheme", "https"),
            (":authority", peer_site),
            (":path", path),
            ("content-type", "application/x-isthmus-federation"),
            ("isthmus-site", local_site),
        ]
    )
    try:
        status = dict(await stream.response_headers()).get(b":status")
    except BaseException:
        with trio.CancelScope(shield=True):
            await stream.aclose()
        raise
    if status == b"200":
        return stream
    log.debug("%s answered the export stream on %s with %r", peer_site, path, status)
    with trio.CancelScope(shield=True):
        await stream.aclose()
    return None


async def serve_import(
    stream: H2Stream,
    *,
    peer_site: str,
    on_update: Callable[[ImportUpdate], None],
    max_message_bytes: int = MAX_MESSAGE_BYTES,
    routes: bool = False,
) -> None:
    """Receive ``peer_site``'s export on ``stream`` and hand each applied change to ``on_update``.

    ``routes``: the stream is protocol version 2 (services may carry the owner's routes).

    Returns when the peer ends the stream cleanly; raises :class:`FederationProtocolError` on
    malformed, oversized or out-of-protocol input (the owner disconnects the peer).
    """
    await stream.send_headers(
        [(":status", "200"), ("content-type", "application/x-isthmus-federation")]
    )
    session = ImportSession(peer_site)
    decoder = FrameDecoder(max_message_bytes=max_message_bytes, routes=routes)
    while True:
        data = await stream.receive_some(FRAME_READ_SIZE)
        if not data:
            decoder.close()
            return
        for msg in decoder.feed(data):
            result = session.receive(msg)
            if result.update is not None:
                on_update(result.update)
            if result.reply is not None:
                await stream.send_all(encode_message(result.reply))
