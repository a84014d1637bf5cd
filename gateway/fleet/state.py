"""What a gateway knows of the fleet document: the version it runs, the latest it read, the
last one it rejected and why, and whether the authority answers.

Plain data, updated by the watcher and the reloader, read by ``/fleet``, ``/config``,
``/metrics`` and ``isthmus status --fleet``.  The states a site reports:

* ``current``  -- it runs the latest version it read;
* ``rejected`` -- the latest version failed validation here (the problems say why); the
  previous version keeps serving;
* ``pending``  -- nothing read yet, or the latest version read is not applied yet;
* ``unreachable`` -- the last read of the authority failed (the version it runs stays).
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.config.errors import Problem
from gateway.fleet.document import EMPTY, FleetDocument
from gateway.observe.metrics import GaugeFamily

#: Problems kept of a rejected version (each is logged; /fleet shows the first ones).
MAX_SHOWN_PROBLEMS = 50


def iso_time(wall: float | None) -> str | None:
    if wall is None:
        return None
    return datetime.datetime.fromtimestamp(wall, datetime.UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Rejection:
    version: str
    problems: tuple[Problem, ...]
    at: float

    def json(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "at": iso_time(self.at),
            "problems": [
                {"path": p.path or "<root>", "message": p.message}
                for p in self.problems[:MAX_SHOWN_PROBLEMS]
            ],
            "problem_count": len(self.problems),
        }


@dataclass
class FleetState:
    source: str
    prefix: str
    site: str = ""
    document: FleetDocument = EMPTY
    applied_at: float | None = None  # None: no version applied yet
    latest: str | None = None  # the version last read from the authority
    rejected: Rejection | None = None
    rejected_total: int = 0
    error: str | None = None
    applied_total: int = 0
    #: The latest version read, when this site rejected it after decoding it (the merge with
    #: its file was invalid or needs a restart): a file reload tries it again.
    waiting: FleetDocument | None = None
    #: At a control site (``source = "site"``, the authority): each site's answer to the
    #: pushed versions, and the URL of the fleet API; shown in ``/fleet``.
    sites: Callable[[], list[dict[str, Any]]] | None = None
    api: str | None = None

    @property
    def version(self) -> str | None:
        return None if self.applied_at is None else self.document.version

    @property
    def state(self) -> str:
        if self.error is not None:
            return "unreachable"
        if self.latest is not None and self.latest == self.version:
            return "current"
        if self.rejected is not None and self.rejected.version == self.latest:
            return "rejected"
        return "pending"

    def record_read(self, version: str) -> None:
        self.latest, self.error = version, None

    def record_applied(self, doc: FleetDocument, now: float) -> None:
        self.document, self.applied_at, self.waiting = doc, now, None
        self.applied_total += 1

    def record_rejected(
        self,
        version: str,
        problems: tuple[Problem, ...],
        now: float,
        doc: FleetDocument | None = None,
    ) -> None:
        self.rejected = Rejection(version, problems, now)
        self.rejected_total += 1
        self.waiting = doc

    def record_error(self, reason: str) -> None:
        self.error = reason

    def status(self) -> dict[str, Any]:
        """The ``/fleet`` admin view."""
        return {
            "site": self.site,
            "source": self.source,
            "prefix": self.prefix,
            "version": self.version,
            "applied_at": iso_time(self.applied_at),
            "applied_unix": self.applied_at,  # wall clock, for measuring push latency
            "latest": self.latest,
            "state": self.state,
            "resources": [f"{r.kind}/{r.name}" for r in self.document.resources],
            "rejected": None if self.rejected is None else self.rejected.json(),
            "rejected_total": self.rejected_total,
            "error": self.error,
            **({} if self.sites is None else {"sites": self.sites()}),
            **({} if self.api is None else {"api": self.api}),
        }

    def gauges(self) -> list[GaugeFamily]:
        """``isthmus_fleet_version_info{version}``, ``isthmus_fleet_rejected_total`` and
        ``isthmus_fleet_authority_up`` for ``/metrics``."""
        info = () if self.version is None else ((((self.version),), 1.0),)
        return [
            GaugeFamily(
                "isthmus_fleet_version_info",
                "The fleet document version this gateway runs (value 1).",
                ("version",),
                info,
            ),
            GaugeFamily(
                "isthmus_fleet_rejected_total",
                "Fleet document versions this gateway rejected (the old one kept serving).",
                (),
                (((), float(self.rejected_total)),),
                kind="counter",
            ),
            GaugeFamily(
                "isthmus_fleet_authority_up",
                "1 when the last read of the fleet authority succeeded.",
                (),
                (((), 0.0 if self.error is not None else 1.0),),
            ),
        ]
