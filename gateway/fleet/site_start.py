"""Start the fleet document's control-site path in a gateway (``[fleet] source = "site"``).

At the authority site: the store, the local apply, the mTLS fleet API and the push to every
peer.  At another site: the inbox that takes the authority's pushes.  Every gateway with
peers serves the push path, so that a push from a peer that is not this site's authority is
refused (403) and logged rather than mistaken for traffic.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING

import trio

from gateway.config.fleet import is_authority
from gateway.fleet.authority import AuthorityError
from gateway.fleet.document import EMPTY, FleetDocument
from gateway.fleet.site_api import FleetApi
from gateway.fleet.site_inbox import FleetInbox
from gateway.fleet.site_push import FleetAuthority
from gateway.fleet.site_store import store_of
from gateway.fleet.site_wire import FLEET_PATH
from gateway.fleet.state import FleetState
from overlay.h2.stream import H2Stream

if TYPE_CHECKING:
    from gateway.app import Gateway
    from gateway.config.model import GatewayConfig
    from gateway.reload.apply import ConfigReloader

log = logging.getLogger("isthmus.fleet")


async def _refuse(local_site: str, peer_site: str, stream: H2Stream) -> None:
    log.warning(
        "fleet push from peer %s refused: %s takes no fleet pushes from it", peer_site, local_site
    )
    await stream.send_headers([(":status", "403")], end_stream=True)


def site_state(config: GatewayConfig) -> FleetState:
    return FleetState("site", config.fleet.authority_site, config.site.name)


class SiteFleet:
    """The control-site path of one gateway: made before the east-west listener starts (so a
    push never reaches the traffic handler), started once the gateway is fully up."""

    def __init__(self, gw: Gateway, reloader: ConfigReloader | None) -> None:
        self.gw = gw
        self.reloader = reloader
        self.ready = trio.Event()
        config = gw.config
        state = None if reloader is None else reloader.fleet
        self.active = config.fleet.source == "site" and state is not None
        if self.active and state is not None and reloader is not None and not is_authority(config):
            inbox = FleetInbox(
                authority_site=config.fleet.authority_site,
                state=state,
                apply=reloader.apply_fleet,
                max_document_bytes=config.fleet.max_document_bytes,
                max_resources=config.fleet.max_resources,
                wall_clock=time.time,
                ready=self.ready,
                cache=None if config.fleet.store_dir is None else store_of(config.fleet),
            )
            gw.peering.add_stream_path(FLEET_PATH, inbox)
        else:
            gw.peering.add_stream_path(FLEET_PATH, functools.partial(_refuse, config.site.name))

    async def start(self, nursery: trio.Nursery, initial: FleetDocument | None) -> None:
        """Start what this site's ``[fleet]`` asks for (see the module docstring)."""
        self.ready.set()  # versions are applied to a gateway that is fully up
        config, reloader = self.gw.config, self.reloader
        if not self.active or not is_authority(config) or reloader is None:
            return
        state = reloader.fleet
        assert state is not None
        fleet = config.fleet
        store = store_of(fleet)
        current = initial
        if current is None:
            try:
                current = await trio.to_thread.run_sync(store.read_current)
            except (AuthorityError, OSError) as err:
                log.error("fleet: the stored document is unusable (%s); pushing none", err)
                current = EMPTY
        authority = FleetAuthority(
            site=config.site.name,
            store=store,
            initial=current,
            state=state,
            apply=reloader.apply_fleet,
            config=fleet,
            wall_clock=time.time,
        )
        if initial is None:
            # Not merged at start (invalid here, or unreadable): try it now, so this site
            # reports it as rejected like any other site would.
            nursery.start_soon(authority.apply_here, current)
        api = FleetApi(
            authority,
            self.gw.identity,
            writers=fleet.writers,
            max_document_bytes=fleet.max_document_bytes,
        )
        port = await nursery.start(
            functools.partial(api.serve, host=fleet.api_address, port=fleet.api_port)
        )
        host = f"[{fleet.api_address}]" if ":" in fleet.api_address else fleet.api_address
        state.api = f"https://{host}:{port}"
        log.info("fleet API on %s (writers: %d)", state.api, len(fleet.writers))
        gw = self.gw
        await nursery.start(
            authority.serve, self.gw.peering, lambda: [p.name for p in gw.config.peers]
        )
