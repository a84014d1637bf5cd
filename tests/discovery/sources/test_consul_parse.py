"""consul_parse (pure): Consul JSON -> endpoints, index rules, and the emitter's decisions."""

from __future__ import annotations

import contextlib
import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.events import Event, Resynced, SourceFresh, SourceStale
from discovery.model import Endpoint, ServiceName
from discovery.sources.consul import _Announced, _View, decide
from discovery.sources.consul_parse import (
    ConsulConfigError,
    ConsulMalformedResponse,
    format_wait,
    next_index,
    parse_catalog_services,
    parse_health_service,
    parse_index,
    parse_node_meta,
    request_deadline,
    select_services,
)


def entry(
    port: int = 8080,
    *,
    node: str = "n1",
    address: str = "10.0.0.1",
    service_address: str = "",
    statuses: tuple[str, ...] = ("passing",),
    tags: list[str] | None = None,
    meta: dict[str, str] | None = None,
    node_meta: dict[str, str] | None = None,
    weights: dict[str, int] | None = None,
) -> dict[str, Any]:
    return {
        "Node": {
            "ID": "",
            "Node": node,
            "Address": address,
            "Datacenter": "dc1",
            "Meta": node_meta,
            "TaggedAddresses": None,
        },
        "Service": {
            "ID": f"web-{port}",
            "Service": "web",
            "Tags": tags,
            "Address": service_address,
            "Port": port,
            "Meta": meta,
            "Weights": weights or {"Passing": 1, "Warning": 1},
        },
        "Checks": [{"CheckID": f"c{i}", "Status": s} for i, s in enumerate(statuses)],
    }


def parse(data: Any, **kwargs: Any) -> tuple[Endpoint, ...]:
    return parse_health_service(data, service="web", namespace="default", **kwargs).endpoints


# -- examples ------------------------------------------------------------------------------------
def test_mapping_of_a_healthy_instance() -> None:
    (endpoint,) = parse([entry(meta={"isthmus-protocol": "tcp", "k": "v"}, tags=["a"])])
    assert endpoint.service == ServiceName("web", "default")
    assert (endpoint.address, endpoint.port, endpoint.protocol) == ("10.0.0.1", 8080, "tcp")
    assert endpoint.healthy and endpoint.weight == 1 and endpoint.locality == "dc1"
    assert dict(endpoint.metadata) == {
        "isthmus-protocol": "tcp",
        "k": "v",
        "consul-node": "n1",
        "consul-service-id": "web-8080",
        "consul-tags": "a",
    }


@pytest.mark.parametrize(
    "statuses, weights, healthy, weight",
    [
        (("passing", "passing"), {"Passing": 5, "Warning": 2}, True, 5),
        (("passing", "warning"), {"Passing": 5, "Warning": 2}, True, 2),
        (("warning", "critical"), {"Passing": 5, "Warning": 2}, False, 2),
        (("maintenance",), {"Passing": 5, "Warning": 2}, False, 5),
        (("warning",), {"Passing": 5, "Warning": 0}, False, 1),
        ((), {"Passing": 100_000, "Warning": 1}, True, 65535),
    ],
)
def test_health_and_weight(
    statuses: tuple[str, ...], weights: dict[str, int], healthy: bool, weight: int
) -> None:
    (endpoint,) = parse([entry(statuses=statuses, weights=weights)])
    assert (endpoint.healthy, endpoint.weight) == (healthy, weight)


def test_service_address_overrides_node_address_and_duplicates_merge() -> None:
    endpoints = parse(
        [
            entry(8080, node="a", statuses=("critical",), service_address="10.9.9.9"),
            entry(8080, node="b", address="10.9.9.9"),  # same address:port -> one endpoint
        ]
    )
    assert len(endpoints) == 1 and endpoints[0].healthy  # the healthy report wins


def test_unusable_instances_are_skipped_not_fatal() -> None:
    report = parse_health_service(
        [
            entry(0),  # registered without a port
            entry(8081, address="not an address!"),
            entry(8082, meta={"isthmus-protocol": "quic"}),
            entry(8083, meta={"isthmus-spiffe-id": "spiffe://UPPER/x"}),
            entry(8084),
        ],
        service="web",
        namespace="default",
    )
    assert [e.port for e in report.endpoints] == [8084]
    assert len(report.skipped) == 4


def test_client_side_filters() -> None:
    data = [
        entry(1, tags=["prod"], node_meta={"rack": "r1"}),
        entry(2, tags=["dev"], node_meta={"rack": "r1"}),
        entry(3, tags=["prod", "x"], node_meta={"rack": "r2"}),
    ]
    assert [e.port for e in parse(data, tags=("prod",))] == [1, 3]
    assert [e.port for e in parse(data, node_meta=(("rack", "r1"),))] == [1, 2]


def _set(data: Any, path: tuple[Any, ...], value: Any) -> Any:
    data = copy.deepcopy(data)
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is _DELETE:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


_DELETE = object()


@pytest.mark.parametrize(
    "path, value",
    [
        ((0, "Service", "Port"), "8080"),
        ((0, "Service", "Port"), True),
        ((0, "Service", "Port"), 70000),
        ((0, "Service", "Port"), -1),
        ((0, "Service", "Port"), 80.0),
        ((0, "Service", "Tags"), "prod"),
        ((0, "Service", "Meta"), {"k": 1}),
        ((0, "Service", "Service"), "other"),
        ((0, "Service", "Weights"), {"Passing": -1, "Warning": 1}),
        ((0, "Service"), _DELETE),
        ((0, "Node", "Address"), None),
        ((0, "Checks"), {"Status": "passing"}),
        ((0, "Checks", 0, "Status"), "fine"),
        ((0,), "web"),
    ],
)
def test_wrong_types_and_missing_fields_refuse_the_whole_answer(
    path: tuple[Any, ...], value: Any
) -> None:
    data = _set([entry(8080), entry(8081)], path, value)
    with pytest.raises(ConsulMalformedResponse):
        parse(data)


def test_catalog_services_and_selection() -> None:
    catalog = parse_catalog_services({"consul": [], "web": ["a", "b"], "db": None, "Bad_Name": []})
    assert catalog["db"] == ()
    selection = select_services(catalog, wanted=(), tags=())
    assert selection.watch == ("db", "web")  # "consul" itself is not watched
    assert [name for name, _ in selection.skipped] == ["Bad_Name"]
    assert select_services(catalog, wanted=(), tags=("a",)).watch == ("web",)
    assert select_services(catalog, wanted=("consul", "db"), tags=()).watch == ("consul", "db")
    for bad in ([], {"web": "a"}, {"web": [1]}, None):
        with pytest.raises(ConsulMalformedResponse):
            parse_catalog_services(bad)


def test_index_rules() -> None:
    assert parse_index("42") == 42
    for bad in (None, "", "-1", "4.2", "0x10", "1" * 21, " ", "٣"):
        with pytest.raises(ConsulMalformedResponse):
            parse_index(bad)
    assert next_index(10, 12) == 12
    assert next_index(10, 10) == 10
    assert next_index(10, 3) == 0  # went backwards: restart with a non-blocking read
    assert next_index(0, 0) == 1  # never block on 0 (busy loop)
    assert format_wait(60) == "60000ms" and format_wait(0.0001) == "1ms"
    assert request_deadline(16.0, 5.0) == 22.0


def test_node_meta_config() -> None:
    assert parse_node_meta(("rack:r1", "k:v:w")) == (("rack", "r1"), ("k", "v:w"))
    with pytest.raises(ConsulConfigError):
        parse_node_meta(("nocolon",))


# -- properties ----------------------------------------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["Node", "Service", "Checks", "Port", "Address", "ID", "Status", "x"]),
            children,
            max_size=5,
        )
    ),
    max_leaves=30,
)


@given(json_values)
@settings(max_examples=300, deadline=None)
def test_any_json_is_parsed_or_refused_with_a_typed_error(data: Any) -> None:
    for parser in (lambda d: parse(d), parse_catalog_services):
        with contextlib.suppress(ConsulMalformedResponse):
            parser(data)


statuses = st.sampled_from(["passing", "warning", "critical", "maintenance"])
instances = st.lists(
    st.tuples(
        st.integers(0, 65535),
        st.sampled_from(["10.0.0.1", "10.0.0.2", "host.example", "::1", "bad address"]),
        st.lists(statuses, max_size=3),
        st.lists(st.sampled_from(["prod", "dev"]), max_size=2, unique=True),
    ),
    max_size=12,
)


@given(instances, st.sampled_from([(), ("prod",)]))
@settings(max_examples=300, deadline=None)
def test_valid_answers_map_faithfully(
    specs: list[tuple[int, str, list[str], list[str]]], tags: tuple[str, ...]
) -> None:
    data = [
        entry(port, node=f"n{i}", address=address, statuses=tuple(st_), tags=tg)
        for i, (port, address, st_, tg) in enumerate(specs)
    ]
    # Round-trip through JSON text, as it arrives on the wire.
    report = parse_health_service(
        json.loads(json.dumps(data)), service="web", namespace="ns", tags=tags
    )
    keys = [(e.address, e.port) for e in report.endpoints]
    assert len(keys) == len(set(keys)) and keys == sorted(keys)
    expected = {
        (address, port)
        for port, address, _, tg in specs
        if port != 0 and address != "bad address" and set(tags) <= set(tg)
    }
    assert set(keys) == expected
    for endpoint in report.endpoints:
        reports = [
            s
            for p, a, s, tg in specs
            if (a, p) == (endpoint.address, endpoint.port) and set(tags) <= set(tg)
        ]
        # Healthy iff some report of that address:port has no critical/maintenance check.
        assert endpoint.healthy == any(not ({"critical", "maintenance"} & set(s)) for s in reports)
        assert endpoint.service == ServiceName("web", "ns") and 1 <= endpoint.weight <= 65535


@given(st.integers(0, 2**64 - 1), st.integers(-5, 2**64 - 1))
def test_next_index_never_blocks_on_a_stale_or_zero_index(previous: int, received: int) -> None:
    result = next_index(previous, received)
    if received < previous:
        assert result == 0
    else:
        assert result >= 1 and result >= min(received, 1)


# -- the emitter's decisions ---------------------------------------------------------------------
def decided(view: _View, told: _Announced, source: str, at: float) -> list[Event]:
    return list(decide(view, told, source, at))  # decide is lazy: the caller iterates


def _ep(port: int) -> Endpoint:
    return Endpoint(ServiceName("web"), "10.0.0.1", port)


def test_decide_announces_stale_once_and_fresh_on_recovery() -> None:
    view, told = _View(watched=("web",), last_index=7), _Announced()
    view.endpoints["web"] = (_ep(1),)
    assert decided(view, told, "c", 1.0) == [Resynced("c", (_ep(1),), "7", 1.0)]
    view.failing["web"] = "ConsulUnavailable: down"
    (stale,) = decided(view, told, "c", 2.0)
    assert isinstance(stale, SourceStale) and "down" in stale.reason
    assert decided(view, told, "c", 3.0) == []  # stale is said once
    del view.failing["web"]
    assert decided(view, told, "c", 4.0) == [SourceFresh("c", "7", 4.0)]
    assert decided(view, told, "c", 5.0) == []
    view.confirm = True  # a quiet successful round confirms the view
    assert decided(view, told, "c", 6.0) == [SourceFresh("c", "7", 6.0)]


def test_decide_waits_for_every_service_and_keeps_last_good_on_failure() -> None:
    view, told = _View(watched=("api", "web")), _Announced()
    view.endpoints["web"] = (_ep(1),)
    assert decided(view, told, "c", 1.0) == []  # api has not answered yet
    view.failing["api"] = "ConsulMalformedResponse: bad"
    events = decided(view, told, "c", 2.0)
    assert [type(e) for e in events] == [Resynced, SourceStale]
    assert isinstance(events[0], Resynced) and events[0].endpoints == (_ep(1),)


def test_decide_unreachable_from_the_start_is_stale() -> None:
    view, told = _View(), _Announced()
    assert decided(view, told, "c", 1.0) == []
    view.failing["catalog/services"] = "ConsulUnavailable: refused"
    assert [type(e) for e in decided(view, told, "c", 2.0)] == [SourceStale]


def test_the_gateways_own_registrations_are_no_service() -> None:
    """``isthmus-gateway`` (each gateway's east-west port, docs/replicas.md) is not imported
    into the catalog unless listed by name."""
    catalog = parse_catalog_services({"isthmus-gateway": [], "web": []})
    assert select_services(catalog, wanted=(), tags=()).watch == ("web",)
    named = select_services(catalog, wanted=("isthmus-gateway",), tags=())
    assert named.watch == ("isthmus-gateway",)
