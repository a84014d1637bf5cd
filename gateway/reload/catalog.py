"""Discovery in its own cancel scope, so a reload can restart it with new sources.

Why a restart is gap-free: the catalog's applier starts from the watch's latest snapshot, so
while the old sources are stopped and the new ones start, routing keeps seeing the last
snapshot; a ``static`` source then replaces its endpoints in one ``Resynced`` step.  Sources the
new config no longer lists are cleared with an empty ``Resynced`` of their own name, so their
endpoints leave in the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from discovery.catalog import apply_many
from discovery.events import Resynced
from discovery.merge import Policy
from discovery.service import serve_catalog
from discovery.snapshot import Catalog
from discovery.sources.config import SourceConfig, precedence
from discovery.watch import Watch

log = logging.getLogger("isthmus.reload")

STOP_TIMEOUT_S = 10.0  # the old sources end at their next checkpoint; this is a hang guard


class CatalogRunner:
    """Runs ``serve_catalog`` for the current sources; :meth:`restart` swaps them."""

    def __init__(self, watch: Watch[Catalog]) -> None:
        self.watch = watch
        self._scope: trio.CancelScope | None = None
        self._ended: trio.Event | None = None

    async def start(self, nursery: trio.Nursery, sources: Sequence[SourceConfig]) -> None:
        """Start the sources in ``nursery``; returns once their first words are in the catalog."""
        scope, ended = trio.CancelScope(), trio.Event()
        self._scope, self._ended = scope, ended

        async def run(*, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
            try:
                with scope:
                    await serve_catalog(sources, self.watch, task_status=task_status)
            finally:
                ended.set()

        await nursery.start(run)

    async def restart(
        self,
        nursery: trio.Nursery,
        old: Sequence[SourceConfig],
        new: Sequence[SourceConfig],
        removed: Sequence[str],
    ) -> None:
        """Stop the sources of ``old``, clear those in ``removed``, start those of ``new``."""
        if self._scope is not None and self._ended is not None:
            self._scope.cancel()
            with trio.move_on_after(STOP_TIMEOUT_S):
                await self._ended.wait()
        if removed:
            now = trio.current_time()
            policy = Policy.from_sources(precedence(old))
            events = [Resynced(name, (), "removed-by-reload", now) for name in removed]
            catalog, _ = apply_many(self.watch.latest, events, now=now, policy=policy)
            if catalog is not self.watch.latest:
                self.watch.publish(catalog)
            log.info("sources removed by reload: %s", ", ".join(removed))
        await self.start(nursery, new)
