"""What the control site knows of every replica's answer, and what that makes of each site.

Theory of operation
-------------------
The authority pushes its fleet document to every live replica of every site, one push stream
and one version in flight per replica (a site of one gateway is a site with one replica).
:class:`SiteAnswers` keeps, per replica, the version it last answered, whether it applied or
rejected it and why, and since when no push stream to it is up.  A site's row in ``/fleet``
(and so ``isthmus status --fleet``) is folded from its replicas by :func:`site_row`:

* the site is **on the current version** only when every *live* replica applied it (a replica
  that is down does not hold the site back; it gets the current version when its link is
  back, and shows ``unreachable`` with ``down_since`` meanwhile);
* otherwise the row shows the replica that lags most (rejected before pending before an older
  version) and ``lagging`` names every live replica that is not on the current version;
* the site is ``unreachable`` only when every replica is, since the last one went.

Pure: no I/O, ``now`` is a wall-clock argument, each change returns a new value.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Literal

from gateway.fleet.site_core import Answer
from gateway.fleet.state import iso_time

SiteStatus = Literal["applied", "rejected", "pending", "unreachable"]

#: Which lagging replica a site's row shows: the most telling first.
_LAG_ORDER: dict[str, int] = {"rejected": 0, "pending": 1, "applied": 2}


@dataclass(frozen=True, slots=True)
class ReplicaAnswer:
    """What the authority knows of one replica of one site."""

    site: str
    replica: str  # the replica's east-west address, "host:port"
    status: SiteStatus = "pending"
    version: str | None = None  # the document version it last answered about
    reason: str | None = None  # why it rejected it
    at: float | None = None  # when it answered (wall clock)
    down_since: float | None = None  # set while no push stream to it is up

    def on(self, current: str | None) -> bool:
        """Whether this replica runs the authority's version ``current``."""
        return self.status == "applied" and self.version == current

    def json(self, current: str | None) -> dict[str, Any]:
        return {
            "replica": self.replica,
            "state": self.status,
            "version": self.version,
            "reason": self.reason,
            "at": iso_time(self.at),
            "down_since": iso_time(self.down_since),
            "current": self.on(current),
        }


@dataclass(frozen=True, slots=True)
class SiteAnswers:
    """Per (site, replica), its latest answer (see the module docstring)."""

    replicas: tuple[ReplicaAnswer, ...] = ()

    def get(self, site: str, replica: str) -> ReplicaAnswer:
        return next(
            (r for r in self.replicas if r.site == site and r.replica == replica),
            ReplicaAnswer(site, replica),
        )

    def _put(self, answer: ReplicaAnswer) -> SiteAnswers:
        others = tuple(
            r for r in self.replicas if (r.site, r.replica) != (answer.site, answer.replica)
        )
        ordered = sorted((*others, answer), key=lambda r: (r.site, r.replica))
        return SiteAnswers(tuple(ordered))

    def answered(self, site: str, replica: str, answer: Answer, now: float) -> SiteAnswers:
        status: SiteStatus = "applied" if answer.applied else "rejected"
        return self._put(
            ReplicaAnswer(site, replica, status, answer.version, answer.reason, now, None)
        )

    def connected(self, site: str, replica: str) -> SiteAnswers:
        old = self.get(site, replica)
        status: SiteStatus = "pending" if old.status == "unreachable" else old.status
        return self._put(replace(old, status=status, down_since=None))

    def disconnected(self, site: str, replica: str, now: float) -> SiteAnswers:
        old = self.get(site, replica)
        since = old.down_since if old.down_since is not None else now
        return self._put(replace(old, status="unreachable", down_since=since))

    def keep_only(self, keys: Iterable[tuple[str, str]]) -> SiteAnswers:
        """Forget the replicas (and sites) no longer configured."""
        wanted = set(keys)
        return SiteAnswers(tuple(r for r in self.replicas if (r.site, r.replica) in wanted))

    def of_site(self, site: str) -> tuple[ReplicaAnswer, ...]:
        return tuple(r for r in self.replicas if r.site == site)

    def json(self, current: str | None) -> list[dict[str, Any]]:
        """Per site (sorted), its row folded from its replicas (see :func:`site_row`)."""
        sites = sorted({r.site for r in self.replicas})
        return [site_row(site, self.of_site(site), current) for site in sites]


def site_row(site: str, replicas: tuple[ReplicaAnswer, ...], current: str | None) -> dict[str, Any]:
    """One site's row: its state, version, reason, ``current`` only when every live replica
    applied ``current``, ``lagging`` (live replicas not on it) and every replica's own row."""
    live = [r for r in replicas if r.status != "unreachable"]
    lagging = [r for r in live if not r.on(current)]
    if not live:
        latest = max(replicas, key=lambda r: r.at or 0.0) if replicas else None
        downs = [r.down_since for r in replicas if r.down_since is not None]
        shown = {
            "state": "unreachable",
            "version": None if latest is None else latest.version,
            "reason": None,
            "at": None if latest is None else iso_time(latest.at),
            "down_since": iso_time(max(downs)) if downs else None,
        }
    else:
        if lagging:
            pick = min(lagging, key=lambda r: _LAG_ORDER.get(r.status, 3))
        else:
            pick = max(live, key=lambda r: r.at or 0.0)
        shown = {
            "state": pick.status,
            "version": pick.version,
            "reason": pick.reason,
            "at": iso_time(pick.at),
            "down_since": None,
        }
    return {
        "site": site,
        **shown,
        "current": bool(live) and not lagging,
        "lagging": [r.replica for r in lagging],
        "replicas": [r.json(current) for r in replicas],
    }
