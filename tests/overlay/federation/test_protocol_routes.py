"""Federation version 2: services carry their owner's routes (snapshot and delta), version 1
never does, and the frame budget counts them."""

from __future__ import annotations

import json

import immutables
import pytest

from discovery.model import ServiceName
from overlay.federation.export import ExportSession
from overlay.federation.import_ import ImportSession, ImportTable, ImportUpdate
from overlay.federation.protocol import (
    Ack,
    Delta,
    ExportedService,
    FederationProtocolError,
    FrameDecoder,
    Snapshot,
    encode_message,
    wire_size_bound,
)

API = ServiceName("api", "payments")
ROUTE = json.dumps({"address": "api.payments", "name": 'say "hi" \\ there', "backends": []})


def service(*routes: str, healthy: int = 1) -> ExportedService:
    return ExportedService(API, ("http1",), healthy, 1, 1, (), routes)


def decode(frame: bytes, *, routes: bool) -> list[object]:
    return list(FrameDecoder(routes=routes).feed(frame))


def test_a_snapshot_with_routes_round_trips_on_version_2() -> None:
    msg = Snapshot("east", "e1", 1, (service(ROUTE, "{}"),))
    assert decode(encode_message(msg), routes=True) == [msg]


def test_version_1_refuses_routes_and_a_service_without_routes_is_the_same_bytes() -> None:
    with pytest.raises(FederationProtocolError, match="routes"):
        decode(encode_message(Snapshot("east", "e1", 1, (service(ROUTE),))), routes=False)
    plain = encode_message(Snapshot("east", "e1", 1, (service(),)))
    assert b"routes" not in plain
    assert decode(plain, routes=False) == decode(plain, routes=True)


@pytest.mark.parametrize("bad", [[], [1], "x", [None], ["caf\u00e9"]])
def test_routes_must_be_a_non_empty_list_of_ascii_strings(bad: object) -> None:
    body = {
        "type": "snapshot",
        "origin_site": "east",
        "epoch": "e1",
        "version": 1,
        "final": True,
        "services": [
            {
                "name": "api",
                "namespace": "payments",
                "protocols": ["http1"],
                "healthy": 1,
                "total": 1,
                "capacity": 1,
                "spiffe_ids": [],
                "routes": bad,
            }
        ],
    }
    raw = json.dumps(body).encode()
    with pytest.raises(FederationProtocolError, match="routes"):
        decode(len(raw).to_bytes(4, "big") + raw, routes=True)


def test_the_size_bound_counts_routes_with_their_escapes() -> None:
    svc = service(ROUTE, ROUTE * 3)
    frame = encode_message(Delta("east", "e1", 1, 2, (svc,), ()))
    without = encode_message(Delta("east", "e1", 1, 2, (), ()))
    assert len(frame) - len(without) <= wire_size_bound(svc)


def test_a_route_change_travels_as_a_delta_and_lands_in_the_import_table() -> None:
    exporter, importer = ExportSession("east", "e1"), ImportSession("east")
    table = ImportTable(grace=10.0)
    views = [
        immutables.Map({API: service(ROUTE)}),
        immutables.Map({API: service("{}")}),  # the owner reloaded its routes
        immutables.Map({API: service()}),  # and dropped them
    ]
    kinds = []
    for i, view in enumerate(views):
        exporter.set_view(view, None if i == 0 else {API})
        msg = exporter.next_message(float(i))
        assert msg is not None and exporter.next_message(float(i)) is None
        kinds.append(type(msg).__name__)
        [wire] = decode(encode_message(msg), routes=True)
        result = importer.receive(wire)  # type: ignore[arg-type]
        assert isinstance(result.reply, Ack) and result.update is not None
        exporter.receive(result.reply)
        table = table.apply(result.update, float(i))
        assert table.peers["east"].services[API].service.routes == view[API].routes
    assert kinds == ["Snapshot", "Delta", "Delta"]


def test_the_import_tables_route_map_changes_only_when_routes_do() -> None:
    web = ServiceName("web", "payments")
    table = ImportTable(grace=10.0).apply(
        ImportUpdate(
            "east", "e1", 1, True, (service(ROUTE), ExportedService(web, ("http1",), 1, 1, 1))
        ),
        0.0,
    )
    routes = table.peers["east"].routes
    assert dict(routes) == {API: (ROUTE,)}
    health = ImportUpdate("east", "e1", 2, False, (service(ROUTE, healthy=0),))
    table = table.apply(health, 1.0)
    assert table.peers["east"].routes is routes  # a health change: the same object
    table = table.apply(ImportUpdate("east", "e1", 3, True, (service(ROUTE),)), 2.0)
    assert table.peers["east"].routes is routes  # a resync with the same routes
    table = table.apply(ImportUpdate("east", "e1", 4, False, (service("{}"),)), 3.0)
    assert dict(table.peers["east"].routes) == {API: ("{}",)}
    table = table.apply(ImportUpdate("east", "e1", 5, False, (), (API,)), 4.0)
    assert dict(table.peers["east"].routes) == {}
