"""Unit and property tests for the pure DNS-SD -> endpoint mapping (no sockets)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.model import ServiceName
from discovery.sources.mdns_txt import (
    InstanceNameInvalid,
    MdnsObservation,
    MdnsRecordError,
    NoUsableAddress,
    SrvInvalid,
    TxtMalformed,
    TxtTooLarge,
    TxtValueInvalid,
    encode_txt,
    endpoint_from_observation,
    parse_txt,
    txt_for_endpoint,
)
from foundation.spiffe_id import SpiffeId

TYPE = "_isthmus._tcp.local."


def obs(
    txt: bytes | dict[str, str] = b"",
    *,
    label: str = "api-1",
    port: int | None = 8080,
    server: str | None = "host-a.local.",
    addresses: tuple[str, ...] = ("198.18.0.10",),
) -> MdnsObservation:
    raw = encode_txt(txt) if isinstance(txt, dict) else txt
    return MdnsObservation(f"{label}.{TYPE}", TYPE, port, server, addresses, raw)


def to_ep(o: MdnsObservation) -> object:
    return endpoint_from_observation(o, default_namespace="default")


def test_full_mapping() -> None:
    ep = endpoint_from_observation(
        obs(
            {
                "svc": "api",
                "ns": "payments",
                "proto": "http2",
                "spiffe": "spiffe://east.example/ns/payments/sa/api",
                "weight": "40",
                "locality": "eu-west-1/eu-west-1a",
                "health": "passing",
                "team": "core",
            }
        ),
        default_namespace="default",
    )
    assert ep.service == ServiceName("api", "payments")
    assert (ep.address, ep.port, ep.protocol, ep.weight) == ("198.18.0.10", 8080, "http2", 40)
    assert ep.spiffe_id == SpiffeId.parse("spiffe://east.example/ns/payments/sa/api")
    assert ep.locality == "eu-west-1/eu-west-1a"
    assert ep.healthy
    meta = dict(ep.metadata)
    assert meta["txt.team"] == "core"
    assert meta["mdns.instance"] == f"api-1.{TYPE}"
    assert meta["mdns.host"] == "host-a.local."


def test_defaults_use_instance_label_and_default_namespace() -> None:
    ep = endpoint_from_observation(obs(b"", label="Web"), default_namespace="shop")
    assert ep.service == ServiceName("web", "shop")
    assert (ep.protocol, ep.weight, ep.spiffe_id, ep.locality, ep.healthy) == (
        "http1",
        1,
        None,
        "",
        True,
    )


def test_label_that_is_not_a_dns_label_needs_svc() -> None:
    with pytest.raises(InstanceNameInvalid):
        to_ep(obs(b"", label="My Printer (2)"))
    ep = endpoint_from_observation(
        obs({"svc": "printer"}, label="My Printer (2)"), default_namespace="default"
    )
    assert ep.service.name == "printer"


def test_txt_rules_first_key_wins_case_insensitive_boolean_and_empty() -> None:
    raw = b"\x06NS=one\x06ns=two\x00\x04=bad\x04flag"
    props = parse_txt("x", raw)
    assert props == {"ns": b"one", "flag": None}


@pytest.mark.parametrize(
    ("txt", "key"),
    [
        ({"weight": "0"}, "weight"),
        ({"weight": "65536"}, "weight"),
        ({"weight": "-3"}, "weight"),
        ({"weight": "+3"}, "weight"),
        ({"weight": "1e3"}, "weight"),
        ({"proto": "http3"}, "proto"),
        ({"ns": "Payments"}, "ns"),
        ({"ns": ""}, "ns"),
        ({"svc": "a" * 64}, "svc"),
        ({"spiffe": "spiffe://East/ns"}, "spiffe"),
        ({"spiffe": "http://x/y"}, "spiffe"),
        ({"locality": "a b"}, "locality"),
        ({"locality": "x" * 129}, "locality"),
        ({"health": "ok"}, "health"),
    ],
)
def test_bad_values_are_typed_errors_naming_the_key(txt: dict[str, str], key: str) -> None:
    with pytest.raises(TxtValueInvalid) as info:
        to_ep(obs(txt))
    assert info.value.key == key
    assert info.value.instance == f"api-1.{TYPE}"


def test_bad_utf8_in_known_key_is_rejected_and_in_unknown_key_dropped() -> None:
    with pytest.raises(TxtValueInvalid, match="UTF-8"):
        to_ep(obs(b"\x07ns=\xff\xfeab"))
    ep = endpoint_from_observation(obs(b"\x07zz=\xff\xfeab"), default_namespace="default")
    assert not any(k == "txt.zz" for k, _ in ep.metadata)


def test_boolean_known_key_is_rejected() -> None:
    with pytest.raises(TxtValueInvalid, match="needs a value"):
        to_ep(obs(b"\x05proto"))


def test_64_kib_txt_is_rejected_before_parsing() -> None:
    raw = (b"\xff" + b"k=" + b"v" * 253) * 257  # 65 792 bytes of well-formed strings
    with pytest.raises(TxtTooLarge):
        to_ep(obs(raw))


def test_truncated_txt_is_malformed() -> None:
    with pytest.raises(TxtMalformed):
        to_ep(obs(b"\x09ns=ab"))


@pytest.mark.parametrize("port", [0, -1, 65536, 10**9])
def test_absurd_ports(port: int) -> None:
    with pytest.raises(SrvInvalid):
        to_ep(obs(port=port))


def test_missing_srv_or_empty_target() -> None:
    with pytest.raises(SrvInvalid):
        to_ep(obs(port=None, server=None))
    with pytest.raises(SrvInvalid):
        to_ep(obs(server="."))


def test_address_choice_prefers_ipv4_and_skips_unusable() -> None:
    ep = endpoint_from_observation(
        obs(addresses=("fe80::1", "2001:db8::5", "198.18.0.9", "198.18.0.3", "0.0.0.0")),
        default_namespace="default",
    )
    assert ep.address == "198.18.0.3"
    ep6 = endpoint_from_observation(
        obs(addresses=("fe80::1", "2001:db8::5", "ff02::fb")), default_namespace="default"
    )
    assert ep6.address == "2001:db8::5"
    with pytest.raises(NoUsableAddress):
        to_ep(obs(addresses=("fe80::1", "224.0.0.251", "not-an-ip")))


def test_name_of_another_type_is_rejected() -> None:
    o = MdnsObservation("api._http._tcp.local.", TYPE, 80, "h.local.", ("198.18.0.1",), b"")
    with pytest.raises(InstanceNameInvalid):
        to_ep(o)


def test_announcer_txt_round_trips() -> None:
    spiffe = SpiffeId.parse("spiffe://west.example/ns/shop/sa/cart")
    props = txt_for_endpoint(
        service="cart",
        namespace="shop",
        protocol="tls",
        spiffe_id=spiffe,
        weight=7,
        locality="dc-2",
        healthy=False,
    )
    ep = endpoint_from_observation(obs(props, label="cart-x"), default_namespace="default")
    assert (ep.service, ep.protocol, ep.spiffe_id, ep.weight, ep.locality, ep.healthy) == (
        ServiceName("cart", "shop"),
        "tls",
        spiffe,
        7,
        "dc-2",
        False,
    )


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_any_txt_bytes_give_an_endpoint_or_a_typed_error(raw: bytes) -> None:
    try:
        ep = endpoint_from_observation(obs(raw), default_namespace="default")
    except MdnsRecordError:
        return
    assert 1 <= ep.weight <= 65535
    assert ep.protocol in ("http1", "http2", "tcp", "tls")
    assert len(ep.metadata) <= 2 + 16


_key = st.text(
    alphabet=st.characters(min_codepoint=0x21, max_codepoint=0x7E, exclude_characters="="),
    min_size=1,
    max_size=9,
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(_key, st.text(max_size=40), max_size=12))
def test_encode_then_parse_round_trips(props: dict[str, str]) -> None:
    lowered: dict[str, str] = {}
    for k, v in props.items():
        lowered.setdefault(k.lower(), v)
    unique = {k: v for k, v in props.items() if lowered.get(k.lower()) == v and k == k.lower()}
    parsed = parse_txt("x", encode_txt(unique))
    assert parsed == {k: v.encode() for k, v in unique.items()}


@settings(max_examples=200, deadline=None)
@given(
    port=st.integers(min_value=-5, max_value=70000),
    addresses=st.lists(st.ip_addresses().map(str), max_size=4),
    label=st.text(max_size=20),
)
def test_any_srv_and_addresses_give_an_endpoint_or_a_typed_error(
    port: int, addresses: list[str], label: str
) -> None:
    try:
        ep = endpoint_from_observation(
            obs({"svc": "api"}, label=label or "x", port=port, addresses=tuple(addresses)),
            default_namespace="default",
        )
    except MdnsRecordError:
        return
    assert 1 <= ep.port <= 65535
    assert ep.address in addresses
