"""The Consul source's emitter does no work proportional to the catalog when nothing changed.

A large Consul catalog is hundreds of services; each blocking query that returns (a change, or
just its ``wait`` running out) wakes the emitter.  It used to rebuild and sort the whole set and
compare it with the last one told -- hundreds of milliseconds of one task step at 100k
endpoints, every few seconds.  Counted here, not timed: sorting or comparing endpoints shows
up as calls of ``EndpointKey.__lt__`` / ``Endpoint.__eq__``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from discovery.events import Added, Event, Removed, Resynced, SourceFresh, SourceStale, Updated
from discovery.model import Endpoint, EndpointKey, ServiceName
from discovery.sources.consul import _Announced, _View, decide

SERVICES = [f"svc{i:03d}" for i in range(40)]


def service_endpoints(name: str, weight: int = 1) -> tuple[Endpoint, ...]:
    # as parse_health_service returns them: sorted by (address, port), no duplicate
    return tuple(
        Endpoint(ServiceName(name), f"10.0.0.{i}", 8000 + p, weight=weight)
        for i in range(10)
        for p in range(5)
    )


def test_full_set_is_the_sorted_union() -> None:
    view = _View(watched=(*tuple(reversed(SERVICES)), "svc001"))
    for name in SERVICES:
        view.endpoints[name] = service_endpoints(name)
    everything = [e for name in SERVICES for e in service_endpoints(name)]
    assert view.full_set() == tuple(sorted(everything, key=lambda e: e.key))


def test_an_unchanged_view_costs_no_endpoint_work(monkeypatch: pytest.MonkeyPatch) -> None:
    view, told = _View(watched=tuple(SERVICES), last_index=3), _Announced()
    for name in SERVICES:
        view.endpoints[name] = service_endpoints(name)
    (first,) = decide_(view, told, "consul", 1.0)
    assert isinstance(first, Resynced) and len(first.endpoints) == 50 * len(SERVICES)

    calls = {"lt": 0, "eq": 0}

    def counting(kind: str, fn: Any) -> Any:
        def wrapper(*args: Any) -> Any:
            calls[kind] += 1
            return fn(*args)

        return wrapper

    monkeypatch.setattr(EndpointKey, "__lt__", counting("lt", EndpointKey.__lt__))
    monkeypatch.setattr(Endpoint, "__eq__", counting("eq", Endpoint.__eq__))
    view.confirm = True  # every watcher answered again, nothing changed
    assert decide_(view, told, "consul", 2.0) == [SourceFresh("consul", "3", 2.0)]
    assert calls == {"lt": 0, "eq": 0}
    # One service changes: only that service is compared, and only its endpoints are told.
    view.endpoints["svc007"] = service_endpoints("svc007", weight=2)
    again = decide_(view, told, "consul", 3.0)
    assert calls["lt"] == 0 and 0 < calls["eq"] <= 2 * 50
    assert again == [Updated("consul", e, "3", 3.0) for e in service_endpoints("svc007", 2)]


def test_a_churn_of_one_service_touches_only_that_service() -> None:
    """After the first full set, a change is sent per endpoint of the changed service: the
    catalog's work is the change, not a compare of the whole set (which at 100k endpoints and
    a 1 % churn per second refolded everything several times a second)."""
    view, told = _View(watched=tuple(SERVICES), last_index=3), _Announced()
    for name in SERVICES:
        view.endpoints[name] = service_endpoints(name)
    (first,) = decide_(view, told, "consul", 1.0)
    assert isinstance(first, Resynced)
    old = service_endpoints("svc011")
    moved = replace(old[3], weight=9)
    new_one = Endpoint(ServiceName("svc011"), "10.0.1.1", 9000)
    view.endpoints["svc011"] = tuple(sorted([*old[:3], moved, *old[5:], new_one], key=spot))
    view.last_index = 4
    events = decide_(view, told, "consul", 2.0)
    assert events == [
        Removed("consul", old[4].key, "4", 2.0),
        Updated("consul", moved, "4", 2.0),
        Added("consul", new_one, "4", 2.0),
    ]
    # a service leaving the watched set: its endpoints are removed, nothing else is told
    view.watched = tuple(s for s in SERVICES if s != "svc020")
    del view.endpoints["svc020"]
    view.last_index = 5
    gone = decide_(view, told, "consul", 3.0)
    assert gone == [Removed("consul", e.key, "5", 3.0) for e in service_endpoints("svc020")]


def test_a_recovery_with_changes_confirms_after_the_deltas() -> None:
    view, told = _View(watched=tuple(SERVICES), last_index=3), _Announced()
    for name in SERVICES:
        view.endpoints[name] = service_endpoints(name)
    decide_(view, told, "consul", 1.0)
    view.failing["svc001"] = "ConsulUnavailable: down"
    assert [type(e) for e in decide_(view, told, "consul", 2.0)] == [SourceStale]
    del view.failing["svc001"]
    view.endpoints["svc001"] = service_endpoints("svc001", weight=3)
    events = decide_(view, told, "consul", 3.0)
    assert [type(e) for e in events] == [Updated] * 50 + [SourceFresh]


def decide_(*args: Any) -> list[Event]:
    return list(decide(*args))


def spot(endpoint: Endpoint) -> tuple[str, int]:
    return (endpoint.address, endpoint.port)
