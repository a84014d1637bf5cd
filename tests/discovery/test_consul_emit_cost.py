"""The Consul source's emitter does no work proportional to the catalog when nothing changed.

A large Consul catalog is hundreds of services; each blocking query that returns (a change, or
just its ``wait`` running out) wakes the emitter.  It used to rebuild and sort the whole set and
compare it with the last one told -- hundreds of milliseconds of one task step at 100k
endpoints, every few seconds.  Counted here, not timed: sorting or comparing endpoints shows
up as calls of ``EndpointKey.__lt__`` / ``Endpoint.__eq__``.
"""

from __future__ import annotations

from typing import Any

import pytest

from discovery.events import Resynced, SourceFresh
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
    (first,) = decide(view, told, "consul", 1.0)
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
    assert decide(view, told, "consul", 2.0) == [SourceFresh("consul", "3", 2.0)]
    assert calls == {"lt": 0, "eq": 0}
    # One service changes: only that service is compared, and the set is rebuilt unsorted.
    view.endpoints["svc007"] = service_endpoints("svc007", weight=2)
    (again,) = decide(view, told, "consul", 3.0)
    assert isinstance(again, Resynced) and again.endpoints == view.full_set()
    assert calls["lt"] == 0 and 0 < calls["eq"] <= 50
