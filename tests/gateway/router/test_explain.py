"""The pure decision trace: sites in failover order, what the walk does at each, the outcome."""

from __future__ import annotations

import immutables
import pytest

from discovery.model import ServiceName
from gateway.http.errors import UnknownAddress
from gateway.router.decide import LINK_DOWN, NoHealthySite, resolve
from gateway.router.explain import (
    EndpointPick,
    SiteProbe,
    explain,
    link_down,
    refused,
    site_takes,
)
from overlay.peering.route_table import RouteView

API = ServiceName("api", "default")
VIEW = RouteView("a", immutables.Map({API: ("a", "b", "c")}))
PICK = EndpointPick("10.0.0.7", 8080, "http1", "weighted_round_robin")


def _resolve(authority: bytes, known: bool = True, view: RouteView = VIEW):  # type: ignore[no-untyped-def]
    return resolve(
        authority,
        mesh_domain="isthmus",
        local_site="a",
        peer_sites={"b", "c"},
        view=view,
        known=lambda _s: known,
    )


def test_local_without_endpoint_and_a_down_link_are_skipped_the_next_site_is_chosen() -> None:
    found = _resolve(b"api.default.isthmus")
    probes = {
        "a": SiteProbe("a", "local", 503, "no healthy endpoint", fails_over=True),
        "b": link_down("b"),
        "c": SiteProbe("c", "up", 200, policy="allowed", endpoint=PICK),
    }
    trace = explain(b"api.default.isthmus", found, probes)
    assert [(c.site, c.decision) for c in trace.candidates] == [
        ("a", "skipped"),
        ("b", "skipped"),
        ("c", "chosen"),
    ]
    assert trace.candidates[1].reason == LINK_DOWN and trace.candidates[1].link == "down"
    assert "did no work" in trace.candidates[0].reason
    assert trace.status is None and trace.site == "c" and trace.endpoint == PICK
    assert trace.candidates[2].policy == "allowed"
    assert trace.as_json()["route"] == "default" and trace.as_json()["sent"] is False


def test_a_denial_at_the_destination_stands_and_later_sites_are_not_reached() -> None:
    found = _resolve(b"api.default.isthmus")
    probes = {
        "a": SiteProbe("a", "local", 503, "no healthy endpoint", fails_over=True),
        "b": SiteProbe("b", "up", 403, "site 'a' may not call api.default", policy="denied"),
    }
    trace = explain(b"api.default.isthmus", found, probes)
    assert [c.decision for c in trace.candidates] == ["skipped", "chosen", "not reached"]
    assert trace.status == 403 and trace.site == "b" and "may not call" in trace.outcome
    assert trace.candidates[1].policy == "denied"
    assert trace.candidates[2].link == "up"  # no probe: nothing known, nothing asked
    probes["c"] = SiteProbe("c", "down")  # the adapter's link state for a site not reached
    later = explain(b"api.default.isthmus", found, probes)
    assert later.candidates[2].decision == "not reached" and later.candidates[2].link == "down"


def test_every_site_failing_is_the_routers_503_naming_each() -> None:
    found = _resolve(b"api.default.isthmus")
    probes = {
        "a": SiteProbe("a", "local", 503, "no healthy endpoint", fails_over=True),
        "b": link_down("b"),
        "c": SiteProbe("c", "up", 503, "no healthy endpoint there", fails_over=True),
    }
    trace = explain(b"api.default.isthmus", found, probes)
    assert trace.status == 503
    assert trace.outcome == (
        "api.default.isthmus: every site failed (a: no healthy endpoint; b: link down; "
        "c: no healthy endpoint there)"
    )


def test_a_peer_that_did_not_answer_is_shown_as_such_and_still_taken() -> None:
    probe = SiteProbe("b", "up", 0, "no answer within 5s", answered=False)
    assert site_takes(probe)
    found = _resolve(b"api.default.isthmus", view=RouteView("a", immutables.Map({API: ("b",)})))
    trace = explain(b"api.default.isthmus", found, {"b": probe})
    assert trace.candidates[0].answered is False and "did not answer" in trace.candidates[0].reason
    assert trace.status is None and trace.site == "b" and trace.endpoint is None


def test_unknown_service_unknown_site_and_no_healthy_site_are_the_routers_errors() -> None:
    with pytest.raises(UnknownAddress, match="no site knows the service"):
        _resolve(b"nope.default.isthmus", known=False)
    with pytest.raises(UnknownAddress, match="unknown site"):
        _resolve(b"api.default.zz.isthmus")
    with pytest.raises(NoHealthySite):
        _resolve(b"api.default.isthmus", view=RouteView("a", immutables.Map()))
    trace = refused(b"nope.default.isthmus", 404, "no site knows the service nope.default")
    assert trace.status == 404 and trace.candidates == () and trace.as_json()["sent"] is False


def test_endpoint_pick_from_a_peer_is_checked() -> None:
    assert EndpointPick.from_json(PICK.as_json()) == PICK
    assert EndpointPick.from_json({"address": "x", "port": "80"}) is None
    assert EndpointPick.from_json({"address": "x", "port": True}) is None
    assert EndpointPick.from_json(["x"]) is None
