"""The merged routing view: failover order, skipping dead sites, pinned addresses."""

from __future__ import annotations

from discovery.model import Endpoint, ServiceName
from overlay.address import L7Address
from overlay.federation.import_ import ImportTable, ImportUpdate
from overlay.peering.route_table import build_route_view
from tests.overlay.federation.strategies import svc

API = L7Address("api", "default")


def local(healthy: bool = True) -> list[Endpoint]:
    return [Endpoint(ServiceName("api", "default"), "10.0.0.1", 80, healthy=healthy)]


def table(*sites: tuple[str, int]) -> ImportTable:
    t = ImportTable(grace=30.0)
    for site, healthy in sites:
        update = ImportUpdate(site, "e", 1, True, (svc("api", healthy=healthy, total=3),))
        t = t.apply(update, now=0.0)
    return t


PRIOS = {"b-site": 10, "a-site": 10, "c-site": 5}


def test_local_first_then_priority_then_name() -> None:
    imports = table(("a-site", 1), ("b-site", 2), ("c-site", 1), ("z-site", 1))
    view = build_route_view("home", local(), imports, PRIOS, now=1.0)
    # c (5) < a = b (10, by name) < z (default 100)
    assert view.sites_for(API) == ("home", "c-site", "a-site", "b-site", "z-site")


def test_skips_unhealthy_local_and_zero_healthy_peers() -> None:
    imports = table(("a-site", 0), ("b-site", 1))
    view = build_route_view("home", local(healthy=False), imports, PRIOS, now=1.0)
    assert view.sites_for(API) == ("b-site",)


def test_skips_down_and_stale_links() -> None:
    imports = table(("a-site", 1), ("b-site", 1), ("c-site", 1)).link_down("c-site", now=1.0)
    view = build_route_view("home", [], imports, PRIOS, now=2.0, down_peers={"a-site"})
    assert view.sites_for(API) == ("b-site",)


def test_max_silence_treats_unconfirmed_peers_as_down() -> None:
    imports = table(("a-site", 1)).confirm("a-site", 10.0)
    assert build_route_view("h", [], imports, {}, now=15.0, max_silence=5.0).sites_for(API) == (
        "a-site",
    )
    assert build_route_view("h", [], imports, {}, now=15.1, max_silence=5.0).sites_for(API) == ()


def test_pinned_addresses_resolve_to_exactly_that_site() -> None:
    imports = table(("a-site", 1), ("b-site", 0))
    view = build_route_view("home", local(), imports, PRIOS, now=1.0)
    assert view.sites_for(API.pinned_to("a-site")) == ("a-site",)
    assert view.sites_for(API.pinned_to("home")) == ("home",)
    assert view.sites_for(API.pinned_to("b-site")) == ()  # no healthy endpoint there
    assert view.sites_for(API.pinned_to("nowhere")) == ()


def test_unknown_service_has_no_sites_and_mesh_domain_is_irrelevant() -> None:
    view = build_route_view("home", local(), table(("a-site", 1)), {}, now=1.0)
    assert view.sites_for(L7Address("nope", "default")) == ()
    assert view.sites_for(L7Address("api", "default", mesh_domain="mesh.example")) == (
        "home",
        "a-site",
    )
    assert set(view.services()) == {ServiceName("api", "default")}


def test_a_peer_named_like_the_local_site_is_ignored() -> None:
    view = build_route_view("home", [], table(("home", 1)), {}, now=1.0)
    assert view.sites_for(API) == ()
