"""Rotation: watch the identity files, swap one reference, close links that lost their trust.

Theory of operation
-------------------
:class:`Identity` is the single mutable cell of the identity layer: it holds the current
:class:`~overlay.identity.state.IdentityState` and a registry of live links.

* New links read ``identity.state`` once, when they start their handshake, and keep that
  state's context for their whole life: a swap never disturbs a link mid-flight.
* :meth:`Identity.swap` replaces the reference, then asks every live link whether it is still
  trusted under the new bundle set (:func:`~overlay.identity.verify.revocation_reason`): a link
  whose peer's trust domain, or the anchor that verified it, has left is revoked (its transport
  is closed, so both directions fail at once).  A new SVID or key alone revokes nothing.
* :func:`serve_identity` polls the files every ``poll_interval_s``.  A cheap ``stat`` (mtime,
  size, inode) decides whether to read; a content hash decides whether anything really changed
  (``touch`` is not a rotation).  The new files are parsed and validated as one snapshot in a
  worker thread; if anything is wrong (half-written PEM, key not matching the certificate,
  expired SVID, malformed bundle) the error is logged once per distinct content and the last
  good state stays.  SPIRE and spiffe-helper replace each file by rename, but the SVID, key and
  bundle are separate files, so a poll can see a new key with the old certificate: a failure
  is therefore reported (once per distinct content) only when a following poll finds the files
  unchanged; a rotation in progress completes silently on the next poll.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import os
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

import trio

from foundation.errors import IdentityError
from overlay.identity.state import (
    BundleSource,
    IdentityState,
    read_identity_files,
    state_from_files,
)
from overlay.identity.verify import VerifiedPeer, revocation_reason

__all__ = ["Identity", "LiveLink", "serve_identity"]

log = logging.getLogger("isthmus.identity")

Stamp = tuple[tuple[int, int, int] | None, ...]


class LiveLink(Protocol):
    """What the registry needs from a link: who verified it, and a way to cut it."""

    @property
    def peer(self) -> VerifiedPeer: ...

    def revoke(self, reason: str) -> None: ...


class Identity:
    """The current identity state plus the registry of live links (see module docs)."""

    def __init__(self, state: IdentityState) -> None:
        self._state = state
        self._links: weakref.WeakSet[LiveLink] = weakref.WeakSet()
        self.generation = 0

    @property
    def state(self) -> IdentityState:
        return self._state

    def register(self, link: LiveLink) -> None:
        """Track ``link``; if the current bundles already distrust it, revoke it at once."""
        self._links.add(link)
        reason = revocation_reason(link.peer, self._state.bundles)
        if reason is not None:
            link.revoke(reason)

    def unregister(self, link: LiveLink) -> None:
        self._links.discard(link)

    def live_links(self) -> tuple[LiveLink, ...]:
        return tuple(self._links)

    def swap(self, new: IdentityState) -> int:
        """Make ``new`` current; revoke links it no longer trusts; return how many."""
        self._state = new
        self.generation += 1
        revoked = 0
        for link in tuple(self._links):
            reason = revocation_reason(link.peer, new.bundles)
            if reason is not None:
                log.warning("closing link to %s: %s", link.peer.spiffe_id, reason)
                link.revoke(reason)
                self._links.discard(link)
                revoked += 1
        return revoked


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _stamp(paths: Sequence[Path]) -> Stamp:
    out: list[tuple[int, int, int] | None] = []
    for p in paths:
        try:
            st = os.stat(p)
        except OSError:
            out.append(None)
        else:
            out.append((st.st_mtime_ns, st.st_size, st.st_ino))
    return tuple(out)


async def serve_identity(
    identity: Identity,
    *,
    svid_path: Path,
    key_path: Path,
    bundles: Sequence[BundleSource],
    poll_interval_s: float = 1.0,
    wall_clock: Callable[[], dt.datetime] = _utcnow,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Poll the identity files forever; swap ``identity`` to each new valid snapshot.

    ``wall_clock`` gives the time certificates are checked against (trio's clock is not wall
    time).  Runs until cancelled.
    """
    paths = [svid_path, key_path, *(b.path for b in bundles)]
    last_stamp = _stamp(paths)
    last_digest = identity.state.digest
    rejected: bytes | None = None  # content already reported bad: stay quiet until it changes
    pending: tuple[bytes | None, str] | None = None  # a failure not yet confirmed by a quiet poll
    task_status.started()
    while True:
        await trio.sleep(poll_interval_s)
        stamp = _stamp(paths)
        if stamp == last_stamp:
            if pending is not None:  # the files settled and are still bad: now it is an error
                rejected, message = pending
                pending = None
                log.error(
                    "rejected new identity files, keeping the last good identity: %s", message
                )
            continue
        last_stamp = stamp
        try:
            files = await trio.to_thread.run_sync(read_identity_files, svid_path, key_path, bundles)
        except IdentityError as exc:
            pending = (None, str(exc))
            continue
        digest = files.digest()
        if digest in (last_digest, rejected):
            pending = None
            continue
        try:
            new = await trio.to_thread.run_sync(
                functools.partial(state_from_files, files, now=wall_clock())
            )
        except (IdentityError, ValueError, OSError) as exc:
            # Writers replace the SVID, key and bundle files one by one: a key that does not
            # match the certificate for one poll is normal.  Report it only if it persists.
            log.debug("identity files not usable yet: %s", exc)
            pending = (digest, str(exc))
            continue
        pending = None
        last_digest = digest
        revoked = identity.swap(new)
        log.info(
            "identity rotated: %s, %d trust bundle(s), %d link(s) closed",
            new.spiffe_id,
            len(new.bundles),
            revoked,
        )
