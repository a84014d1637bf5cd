"""The announcer refuses, before touching the network, what the mdns source would reject."""

from __future__ import annotations

import pytest

from discovery.sources.mdns_announce import AnnounceConfigError, AnnouncedService, service_info
from discovery.sources.mdns_txt import MdnsObservation, endpoint_from_observation
from foundation.spiffe_id import SpiffeId


def test_service_info_maps_back_to_the_same_endpoint() -> None:
    svc = AnnouncedService(
        service="cart",
        namespace="shop",
        address="198.18.0.1",
        port=8443,
        protocol="tls",
        spiffe_id=SpiffeId.parse("spiffe://west.example/ns/shop/sa/cart"),
        weight=3,
        locality="dc-2",
        instance="cart-1",
    )
    info = service_info(svc)
    assert info.name == "cart-1._isthmus._tcp.local."
    assert info.server == "isthmus-198-18-0-1.local."
    obs = MdnsObservation(info.name, info.type, info.port, info.server, ("198.18.0.1",), info.text)
    ep = endpoint_from_observation(obs, default_namespace="other")
    assert (str(ep.service), ep.port, ep.protocol, ep.weight, ep.locality) == (
        "cart.shop",
        8443,
        "tls",
        3,
        "dc-2",
    )
    assert ep.spiffe_id == svc.spiffe_id


@pytest.mark.parametrize(
    "svc",
    [
        AnnouncedService(service="Cart", address="198.18.0.1", port=80),
        AnnouncedService(service="cart", namespace="a_b", address="198.18.0.1", port=80),
        AnnouncedService(service="cart", address="198.18.0.1", port=0),
        AnnouncedService(service="cart", address="198.18.0.1", port=80, weight=0),
        AnnouncedService(service="cart", address="198.18.0.1", port=80, locality="a b"),
        AnnouncedService(service="cart", address="not-an-ip", port=80),
    ],
)
def test_bad_services_fail_fast_with_a_config_error(svc: AnnouncedService) -> None:
    with pytest.raises(AnnounceConfigError):
        service_info(svc)
