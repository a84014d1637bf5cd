"""The fleet document read once before a gateway starts.

Why: a gateway that starts on its own file alone and applies the fleet document later would
serve on a config it never ran for a moment, and a reload cannot add what needs a restart, so
a restarted site could never run such a version again.  Reading it first makes a restart
start on the same config the site ran.  Bounded: when
Consul does not answer in time, or the version is invalid for this site, the gateway starts
on its own file (logged) and the watch catches up or reports the rejection.
"""

from __future__ import annotations

import logging
from pathlib import Path

import trio

from discovery.sources.consul_parse import ConsulConfigError, ConsulError
from gateway.config.errors import ConfigInvalid
from gateway.config.fleet import fleet_consul, is_authority
from gateway.config.load import read_config_text
from gateway.config.model import GatewayConfig
from gateway.fleet.authority import AuthorityError, read_current
from gateway.fleet.consul_kv import open_kv
from gateway.fleet.document import FleetDocument
from gateway.fleet.merge import load_with_fleet
from gateway.fleet.site_store import store_of

log = logging.getLogger("isthmus.fleet")


async def start_config(
    config: GatewayConfig, path: Path
) -> tuple[GatewayConfig, FleetDocument | None]:
    """``config`` merged with the current fleet document, and that document; ``config`` and
    None when there is no ``[fleet]`` source or the document cannot be had or used now."""
    if is_authority(config) or (config.fleet.source == "site" and config.fleet.store_dir):
        return await _from_store(config, path)
    source = fleet_consul(config) if config.fleet.source == "consul" else None
    if source is None:
        return config, None
    timeout = source.connect_timeout_s + source.request_margin_s
    try:
        with trio.fail_after(timeout):
            current = await read_current(await open_kv(source), config.fleet.prefix)
    except (ConsulError, ConsulConfigError, trio.TooSlowError) as err:
        log.warning(
            "fleet: cannot read the fleet document at start (%s); starting on %s",
            err or "timeout",
            path,
        )
        return config, None
    if current.problems:
        log.warning("fleet: the current document is unusable: %s", " ".join(current.problems))
        return config, None
    if current.modify_index == 0:
        return config, current.document
    return await _merged(config, path, current.document)


async def _from_store(
    config: GatewayConfig, path: Path
) -> tuple[GatewayConfig, FleetDocument | None]:
    """At the control site: the document it keeps; at another site, the last version it
    applied (docs/fleet.md, "A control site")."""
    try:
        doc = await trio.to_thread.run_sync(store_of(config.fleet).read_current)
    except (AuthorityError, OSError) as err:
        log.warning(
            "fleet: cannot read the stored document at start (%s); starting on %s", err, path
        )
        return config, None
    if not doc.resources:
        return config, doc
    return await _merged(config, path, doc)


async def _merged(
    config: GatewayConfig, path: Path, doc: FleetDocument
) -> tuple[GatewayConfig, FleetDocument | None]:
    current = doc
    try:
        text = await trio.to_thread.run_sync(read_config_text, path)
        merged = load_with_fleet(text, current, base_dir=path.parent.resolve(), filename=str(path))
    except ConfigInvalid as exc:
        log.warning(
            "fleet version %s is invalid for this site; starting on %s:\n%s",
            current.version,
            path,
            exc.report(),
        )
        return config, None
    log.info("fleet version %s read at start", current.version)
    return merged, current
