"""Which services moved between two catalog snapshots: the right ones, hashing only those.

Counted, not timed: every catalog publish of a Consul churn runs this twice (route fold and each
peer's export) over every local service, and a ServiceName hash is Python code.
"""

from __future__ import annotations

from typing import Any

from discovery.catalog import apply, apply_many
from discovery.events import Event, Removed, Resynced, Updated
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from overlay.federation.export_feed import changed_services

POLICY = Policy(order=("static",))
SERVICES = 200


def endpoint(i: int, weight: int = 1) -> Endpoint:
    return Endpoint(ServiceName(f"svc{i}"), "10.0.0.1", 8000 + i, weight=weight)


def catalog() -> Catalog:
    event = Resynced("static", tuple(endpoint(i) for i in range(SERVICES)), "1", 0.0)
    return apply(Catalog(), event, now=0.0, policy=POLICY)[0]


def test_changed_added_and_removed_services_are_found() -> None:
    old = catalog()
    events: list[Event] = [
        Updated("static", endpoint(3, weight=9), "2", 1.0),
        Updated("static", endpoint(SERVICES + 5), "2", 1.0),  # a new service
        Removed("static", endpoint(7).key, "2", 1.0),  # its only endpoint: the service leaves
    ]
    new, _ = apply_many(old, events, now=1.0, policy=POLICY)
    expected = {ServiceName("svc3"), ServiceName(f"svc{SERVICES + 5}"), ServiceName("svc7")}
    assert changed_services(old, new) == expected
    assert changed_services(new, old) == expected
    assert changed_services(old, old) == set()


def test_a_change_hashes_only_the_changed_services(monkeypatch: Any) -> None:
    old = catalog()
    new, _ = apply_many(
        old, [Updated("static", endpoint(3, weight=9), "2", 1.0)], now=1.0, policy=POLICY
    )
    hashes = [0]
    plain = ServiceName.__hash__

    def counting(self: ServiceName) -> int:
        hashes[0] += 1
        return plain(self)

    monkeypatch.setattr(ServiceName, "__hash__", counting)
    assert changed_services(old, new) == {ServiceName("svc3")}
    # Both maps walked in step: the unchanged services are identity checks, the changed one
    # is hashed into the answer.  A look-up of each new service in the old map cost one hash
    # per service (201 here); the union of both key sets, four.
    assert hashes[0] <= 3
