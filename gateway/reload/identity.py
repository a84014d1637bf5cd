"""The identity part of a reload: new SVID, key or bundle paths (or poll interval).

Why load before swapping: the new files are read and verified off the event loop first, the
same way start-up does; a file that is missing, unparsable, expired, or an SVID that names a
different SPIFFE ID than the running gateway (peers pin that ID) rejects the reload with the
reason, and the current identity keeps serving.  Applying is then one ``Identity.swap`` (new
TLS contexts for new connections; links whose trust domain left the bundle set are closed, as
on rotation) and a restart of the file watcher on the new paths.
"""

from __future__ import annotations

import functools
from typing import Any

import trio

from foundation.errors import IdentityError
from gateway.config.errors import Problem
from gateway.config.model import IdentityConfig
from overlay.identity.rotation import Identity, serve_identity
from overlay.identity.state import BundleSource, IdentityState, load_identity_state

WATCHER_KEY = "identity watcher"


def bundle_sources(ident: IdentityConfig) -> list[BundleSource]:
    return [BundleSource(b.trust_domain, b.path, b.format) for b in ident.bundles]


def identity_watcher(identity: Identity, ident: IdentityConfig) -> Any:
    """``serve_identity`` for ``ident``'s paths, ready for ``nursery.start``."""
    return functools.partial(
        serve_identity,
        identity,
        svid_path=ident.svid,
        key_path=ident.key,
        bundles=bundle_sources(ident),
        poll_interval_s=ident.poll_interval_s,
    )


async def load_new_identity(
    current: Identity, ident: IdentityConfig
) -> tuple[IdentityState | None, tuple[Problem, ...]]:
    """The identity ``ident`` names, verified; or the problems that reject the reload."""
    load = functools.partial(load_identity_state, ident.svid, ident.key, bundle_sources(ident))
    try:
        state = await trio.to_thread.run_sync(load)
    except (IdentityError, ValueError, OSError) as exc:
        return None, (Problem("identity", f"the new identity files are not usable: {exc}"),)
    if state.spiffe_id != current.state.spiffe_id:
        message = (
            f"the new SVID is {state.spiffe_id}, but this gateway is "
            f"{current.state.spiffe_id} (peers pin it); restart the gateway to change it"
        )
        return None, (Problem("identity.svid", message),)
    return state, ()
