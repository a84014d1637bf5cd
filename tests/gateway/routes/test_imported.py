"""Routes owned by another site: what the owner exports, and what an entry gateway follows.

Pure: the owner's texts (:mod:`gateway.routes.owned`), their attachment to a peer's export
view (:mod:`overlay.federation.export_routes`), and the importer's validation, precedence and
conflict choice (:mod:`gateway.routes.imported`).
"""

from __future__ import annotations

import json
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from discovery.model import Endpoint, ServiceName
from gateway.config.routes import Backend, RouteConfig
from gateway.routes.forward import Mirrors, RouteRules
from gateway.routes.imported import RouteDecoder, choose_routes
from gateway.routes.owned import MAX_ROUTES_PER_SERVICE, owned_route_texts, route_text
from gateway.routes.table import compile_routes, view_of
from overlay.federation.config import ExportConfig
from overlay.federation.export import compute_export
from overlay.federation.export_routes import RoutedView

from .routes_kit import routes

API = ServiceName("api", "payments")
WEB = ServiceName("web", "payments")
CANARY = """
[[routes]]
address = "api.payments"
name = "canary"
match = { path = { prefix = "/v1/" }, headers = [{ name = "x-user", regex = "[a-z]+" }] }
backends = [
  { service = "api.payments", site = "a", weight = 90 },
  { service = "api.payments", site = "b", weight = 10 },
]
request_headers = { add = { "x-canary" = "1" }, remove = ["x-debug"] }
timeouts = { response_head_s = 5 }
rate_limit = { requests_per_s = 10, burst = 20, key = "caller_site" }
"""


def text(backends: str = '[{ service = "api.payments", site = "b" }]', **kw: object) -> str:
    data: dict[str, object] = {"address": "api.payments", "name": "r"}
    data.update(kw)
    route = routes(f'[[routes]]\naddress = "api.payments"\nbackends = {backends}\n')[0]
    return route_text(route, "r") if not kw else json.dumps(data)


# -- the owner's side -----------------------------------------------------------------------


def test_the_owner_exports_its_routes_by_service_and_they_decode_to_the_same_route() -> None:
    owned, problems = owned_route_texts(routes(CANARY), "a")
    assert problems == [] and list(owned) == [API]
    decoder = RouteDecoder("c", ["a", "b"])
    decoded = decoder.decode("a", API, owned[API][0])
    assert isinstance(decoded, RouteConfig)
    assert decoded == replace(routes(CANARY)[0], name="a/canary")


def test_only_routes_for_the_any_site_address_or_the_owners_own_pin_are_exported() -> None:
    toml = """
[[routes]]
address = "api.payments"
backends = [{ service = "api.payments", site = "b" }]
[[routes]]
address = "api.payments.a"
direct_response = { status = 503 }
[[routes]]
address = "api.payments.b"
direct_response = { status = 503 }
[[routes]]
address = "web.payments"
backends = [{ service = "api.payments" }]
"""
    owned, _ = owned_route_texts(routes(toml), "a")
    assert {k: [json.loads(t)["name"] for t in v] for k, v in owned.items()} == {
        API: ["routes[0]", "routes[1]"],
        WEB: ["routes[3]"],
    }


def test_a_service_over_the_limits_exports_none_of_its_routes_and_is_named() -> None:
    one = '[[routes]]\naddress = "{}"\ndirect_response = {{ status = 503 }}\n'
    toml = one.format("web.payments") + one.format("api.payments") * (MAX_ROUTES_PER_SERVICE + 1)
    owned, problems = owned_route_texts(routes(toml), "a")
    assert list(owned) == [WEB] and len(owned[WEB]) == 1
    assert problems == [f"api.payments: {MAX_ROUTES_PER_SERVICE + 1} routes (over 256)"]


def test_a_peer_sees_routes_only_for_the_services_it_may_import() -> None:
    endpoints = [Endpoint(API, "10.0.0.1", 80), Endpoint(WEB, "10.0.0.2", 80)]
    rules = [ExportConfig(service="api", peers=("b",)), ExportConfig(service="web")]
    owned = {API: ("x",), WEB: ("y",)}
    for peer, expected in (("b", {API: ("x",), WEB: ("y",)}), ("c", {WEB: ("y",)})):
        routed = RoutedView()
        routed.update(compute_export(endpoints, rules, peer), None, owned)
        assert {n: s.routes for n, s in routed.view.items()} == expected


def test_without_routes_the_view_is_passed_through_and_a_route_change_names_all() -> None:
    view = compute_export([Endpoint(API, "10.0.0.1", 80)], [ExportConfig()], "b")
    routed = RoutedView()
    assert routed.update(view, frozenset({API}), {}) == frozenset({API})
    assert routed.view is view
    assert routed.update(view, frozenset(), {API: ("x",)}) is None
    assert routed.view[API].routes == ("x",)
    # a catalog change with the same routes: only the changed services, routes kept
    assert routed.update(view, frozenset({API}), routed._routes) == frozenset({API})
    assert routed.view[API].routes == ("x",)


# -- the importer's side: precedence and conflicts ------------------------------------------


def chosen_names(result: object) -> dict[str, list[str]]:
    routes_ = result.routes  # type: ignore[attr-defined]
    return {".".join(p for p in k if p): [r.name for r in v] for k, v in routes_.items()}


def test_a_local_route_for_the_address_wins_over_an_imported_one() -> None:
    owned, _ = owned_route_texts(routes(CANARY), "a")
    local = frozenset(compile_routes(routes(CANARY), "isthmus").by_address)
    result = choose_routes({"a": owned}, local, {}, RouteDecoder("c", ["a", "b"]))
    assert result.routes == {} and result.shadowed == local
    result = choose_routes({"a": owned}, frozenset(), {}, RouteDecoder("c", ["a", "b"]))
    assert chosen_names(result) == {"api.payments": ["a/canary"]}


def test_the_first_site_by_priority_then_name_wins_and_the_others_are_a_conflict() -> None:
    to_a = {API: (text('[{ service = "api.payments", site = "a" }]'),)}
    to_b = {API: (text('[{ service = "api.payments", site = "b" }]'),)}
    peers = {"a": to_a, "b": to_b}
    decoder = RouteDecoder("c", ["a", "b"])
    by_name = choose_routes(peers, frozenset(), {}, decoder)
    assert by_name.origin == {("api", "payments", None): "a"}
    assert by_name.conflicts == {("api", "payments", None): ("b",)}
    route = by_name.routes[("api", "payments", None)][0]
    assert route.backends == (Backend("api.payments", "a"),)
    by_priority = choose_routes(peers, frozenset(), {"a": 20, "b": 10}, decoder)
    assert by_priority.origin == {("api", "payments", None): "b"}
    assert by_priority.conflicts == {("api", "payments", None): ("a",)}
    same = choose_routes({"a": to_a, "b": to_a}, frozenset(), {}, decoder)
    assert same.conflicts == {} and same.origin == {("api", "payments", None): "a"}


def test_a_site_that_exports_the_service_without_routes_has_no_say() -> None:
    to_b = {API: (text(),)}
    result = choose_routes({"b": to_b, "a": {}}, frozenset(), {"a": 1}, RouteDecoder("c", "ab"))
    assert result.origin == {("api", "payments", None): "b"} and result.conflicts == {}


# -- the importer's side: validation --------------------------------------------------------


def good() -> str:
    return text()


BAD = {
    "backreference": json.dumps(
        {"address": "api.payments", "match": {"path": {"regex": "(a)\\1"}}}
    ),
    "x-isthmus header": json.dumps(
        {"address": "api.payments", "request_headers": {"add": {"x-isthmus-caller": "me"}}}
    ),
    "hop-by-hop header": json.dumps(
        {"address": "api.payments", "response_headers": {"remove": ["connection"]}}
    ),
    "unknown key": json.dumps({"address": "api.payments", "evil": True}),
    "another service": json.dumps({"address": "web.payments", "direct_response": {}}),
    "pinned to another site": json.dumps({"address": "api.payments.b", "direct_response": {}}),
    "backend at an unknown site": json.dumps(
        {"address": "api.payments", "backends": [{"service": "api.payments", "site": "zz"}]}
    ),
    "a name that is no label": json.dumps(
        {"address": "api.payments", "name": "a\nb", "direct_response": {}}
    ),
    "null": json.dumps({"address": "api.payments", "rewrite_prefix": None}),
    "NaN": '{"address": "api.payments", "timeouts": {"idle_s": NaN}}',
    "not json": "{",
    "not a table": "[1, 2]",
    "too big": json.dumps({"address": "api.payments", "name": "x" * 90_000}),
    "deep": "[" * 100_000 + "]" * 100_000,
}


def test_bad_imported_routes_are_rejected_with_a_reason_and_cost_only_their_service() -> None:
    texts = (*BAD.values(), good())
    web = json.dumps({"address": "web.payments", "name": "w", "direct_response": {}})
    peers = {"a": {API: texts, WEB: (web,)}}
    result = choose_routes(peers, frozenset(), {}, RouteDecoder("c", ["a", "b"]))
    assert [r.position for r in result.rejected] == list(range(len(BAD)))
    reasons = {name: r.reason for name, r in zip(BAD, result.rejected, strict=True)}
    assert "backreferences" in reasons["backreference"]
    assert "reserved" in reasons["x-isthmus header"]
    assert "reserved" in reasons["hop-by-hop header"]
    assert "evil" in reasons["unknown key"]
    assert "exports" in reasons["another service"]
    assert "exports" in reasons["pinned to another site"]
    assert "'zz'" in reasons["backend at an unknown site"]
    assert "not JSON" in reasons["not json"] and "table" in reasons["not a table"]
    assert "limit" in reasons["too big"]
    assert "printable" in reasons["a name that is no label"]
    assert "null" in reasons["null"] and "NaN" in reasons["NaN"]
    assert "none of the service's 15 routes" in reasons["not json"]
    # api's good route is not followed without the others (first match wins: a partial list
    # would take requests elsewhere); the peer's other service keeps its route
    assert chosen_names(result) == {"web.payments": ["a/w"]}
    alone = choose_routes({"a": {API: (good(),)}}, frozenset(), {}, RouteDecoder("c", "ab"))
    assert chosen_names(alone) == {"api.payments": ["a/r"]}


def test_the_routes_taken_from_one_site_are_bounded_by_whole_services() -> None:
    def one(i: int) -> str:
        return json.dumps({"address": f"s{i}.payments", "direct_response": {}})

    peers = {"a": {ServiceName(f"s{i}", "payments"): (one(i),) * 2 for i in range(5)}}
    decoder = RouteDecoder("c", ["a", "b"])
    result = choose_routes(peers, frozenset(), {}, decoder, max_per_peer=7)
    assert len(result) == 6 and [str(r.service) for r in result.rejected] == [
        "s3.payments",
        "s4.payments",
    ]
    limit = 4 * len(one(0)) + 1
    result = choose_routes(peers, frozenset(), {}, decoder, max_bytes_per_peer=limit)
    assert len(result) == 4 and "bytes" in result.rejected[0].reason


def test_a_backend_pinned_to_the_entry_site_itself_is_accepted() -> None:
    pinned = route_text(RouteConfig("api.payments", backends=(Backend("api.payments", "c"),)), "r")
    result = choose_routes({"a": {API: (pinned,)}}, frozenset(), {}, RouteDecoder("c", "ab"))
    assert result.rejected == () and len(result) == 1


def test_an_imported_route_is_matched_like_a_local_one() -> None:
    owned, _ = owned_route_texts(routes(CANARY), "a")
    result = choose_routes({"a": owned}, frozenset(), {}, RouteDecoder("c", ["a", "b"]))
    imported = compile_routes(result.routes[("api", "payments", None)], "isthmus")
    local = compile_routes(routes(CANARY), "isthmus")
    key = ("api", "payments", None)
    for path, user in ((b"/v1/x", b"bob"), (b"/v1/x", b"B0B"), (b"/v2/x", b"bob")):
        view = view_of(b"GET", path, ((b"x-user", user),), None, "c")
        hit, want = imported.match(key, view), local.match(key, view)
        assert (hit is None) == (want is None)
        if hit is not None and want is not None:
            assert hit.hosts == want.hosts and hit.cumulative == want.cumulative
    rules = RouteRules(imported, mesh_domain="isthmus", mirrors=Mirrors())
    assert rules.table.by_address[key][0].label == "a/canary"


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=30,
)
KEYS = st.sampled_from(
    [
        "address",
        "name",
        "match",
        "backends",
        "request_headers",
        "direct_response",
        "mirror",
        "rewrite_prefix",
        "timeouts",
        "rate_limit",
        "fault",
        "path",
        "regex",
        "site",
        "weight",
    ]
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(KEYS, JSON, max_size=6))
def test_any_json_from_a_peer_is_a_route_or_a_reason_never_an_exception(data: dict) -> None:
    data.setdefault("address", "api.payments")
    verdict = RouteDecoder("c", ["a", "b"]).decode("a", API, json.dumps(data))
    assert isinstance(verdict, (RouteConfig, str))
