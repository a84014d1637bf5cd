"""Per-endpoint events for what changed between two per-service views of the Consul source.

Why: the source used to announce every change as one :class:`~discovery.events.Resynced`
carrying the complete set.  The catalog compares a full set in O(set), so at 100k endpoints a
1 % churn per second -- hundreds of services answering their blocking queries, each waking the
emitter -- refolded the whole catalog several times a second, and the data path sharing the
loop waited behind it.  A Consul answer is per service, so the change is known per service:
this module turns the services whose endpoint tuples differ into Added / Updated / Removed
events for exactly the endpoints that differ, O(size of the changed services) and nothing
for the rest.

Pure: plain values in, events out.  Each service's tuple is as
:func:`~discovery.sources.consul_parse.parse_health_service` returns it: one endpoint per
(address, port), and an unchanged instance keeps its endpoint *object* (the parse reuses it), so
the identity test settles almost every comparison.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from discovery.events import Added, Event, Removed, Updated
from discovery.model import Endpoint

PerService = Mapping[str, tuple[Endpoint, ...] | None]
"""Service name -> its endpoints (None: never answered successfully, i.e. none told)."""


def service_deltas(
    old: tuple[Endpoint, ...],
    new: tuple[Endpoint, ...],
    *,
    source: str,
    version: str,
    at: float,
) -> list[Event]:
    """The events that turn one service's ``old`` endpoints into ``new`` (removals first)."""
    if old is new:
        return []
    before = {(e.address, e.port): e for e in old}
    events: list[Event] = []
    after: set[tuple[str, int]] = set()
    for endpoint in new:
        spot = (endpoint.address, endpoint.port)
        after.add(spot)
        was = before.get(spot)
        if was is None:
            events.append(Added(source, endpoint, version, at))
        elif was is not endpoint and was != endpoint:
            events.append(Updated(source, endpoint, version, at))
    gone = [Removed(source, e.key, version, at) for s, e in before.items() if s not in after]
    return [*gone, *events]


def view_deltas(
    told: PerService, current: PerService, *, source: str, version: str, at: float
) -> Iterator[Event]:
    """Events for every service whose tuple in ``current`` is not the one in ``told``, lazily
    (one service's worth of work per step of the caller).

    A service missing from ``current`` left the watched set: all of its told endpoints are
    removed.  Neither mapping may change while this runs (the caller replaces, never mutates).
    """
    for name in sorted(told.keys() | current.keys()):
        old, new = told.get(name) or (), current.get(name) or ()
        if old is not new:
            yield from service_deltas(old, new, source=source, version=version, at=at)
