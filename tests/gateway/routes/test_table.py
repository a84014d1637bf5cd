"""``[[routes]]``: decoded with exact field paths, compiled once, first match wins."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from foundation.spiffe_id import SpiffeId
from gateway.config.errors import ConfigInvalid
from gateway.config.load import load_text
from gateway.config.model import GatewayConfig
from gateway.config.routes import PathMatch, RouteConfig, RouteMatch
from gateway.routes.table import INDEX_MIN_ROUTES, RequestView, compile_routes, view_of
from tests.gateway.config.config_kit import GOOD

WEB = SpiffeId.parse("spiffe://aws-east.isthmus.test/ns/shop/sa/web")
KEY = ("checkout", "shop", None)

ROUTES = """
[[routes]]
address = "checkout.shop"
name = "exact"
match = { path = { exact = "/health" } }
direct_response = { status = 204 }

[[routes]]
address = "checkout.shop"
name = "regex-post"
match = { path = { regex = "/orders/[0-9]+" }, methods = ["POST"] }

[[routes]]
address = "checkout.shop"
name = "header-present"
match = { headers = [{ name = "x-canary", present = true }] }

[[routes]]
address = "checkout.shop"
name = "header-exact-and-query"
match = { headers = [{ name = "x-user", exact = "bob" }], query = [{ name = "v", regex = "2|3" }] }

[[routes]]
address = "checkout.shop"
name = "caller"
[routes.match]
caller_ids = ["spiffe://aws-east.isthmus.test/ns/shop/sa/web"]
caller_sites = ["aws-east"]

[[routes]]
address = "checkout.shop"
name = "prefix"
match = { path = { prefix = "/v1/" } }
rewrite_prefix = "/v2/"
backends = [
  { service = "checkout.shop", weight = 90 },
  { service = "checkout.shop", site = "gcp-west", weight = 10 },
]
"""


def _config(extra: str) -> GatewayConfig:
    return load_text(GOOD + extra, base_dir=Path("/etc/isthmus"))


def _problems(extra: str) -> list[str]:
    with pytest.raises(ConfigInvalid) as info:
        _config(extra)
    return [f"{p.path}: {p.message}" for p in info.value.problems]


def _view(
    path: bytes = b"/",
    method: bytes = b"GET",
    headers: tuple[tuple[bytes, bytes], ...] = (),
    caller: SpiffeId | None = None,
    site: str = "gcp-west",
) -> RequestView:
    return view_of(method, path, headers, caller, site)


def _name(view: RequestView) -> str | None:
    table = compile_routes(_config(ROUTES).routes, "isthmus")
    route = table.match(KEY, view)
    return None if route is None else route.label


def test_each_condition_and_the_first_match_wins() -> None:
    assert _name(_view(b"/health")) == "exact"
    assert _name(_view(b"/health?x=1")) == "exact"  # the path is matched without the query
    assert _name(_view(b"/healthz")) is None
    assert _name(_view(b"/orders/12", b"POST")) == "regex-post"
    assert _name(_view(b"/orders/12", b"GET")) is None
    assert _name(_view(b"/orders/12x", b"POST")) is None  # a regex matches the whole path
    assert _name(_view(b"/health", headers=((b"x-canary", b""),))) == "exact"  # order wins
    assert _name(_view(b"/", headers=((b"x-canary", b"1"),))) == "header-present"
    bob = ((b"x-user", b"alice"), (b"x-user", b"bob"))  # any value of a repeated field
    assert _name(_view(b"/?v=3", headers=bob)) == "header-exact-and-query"
    assert _name(_view(b"/?v=4", headers=bob)) is None
    assert _name(_view(b"/?a=1&v=2", headers=bob)) == "header-exact-and-query"
    assert _name(_view(caller=WEB, site="aws-east")) == "caller"
    assert _name(_view(caller=WEB, site="gcp-west")) is None
    assert _name(_view(b"/v1/x")) == "prefix"


def test_other_addresses_have_no_route() -> None:
    table = compile_routes(_config(ROUTES).routes, "isthmus")
    assert table.match(("checkout", "shop", "aws-east"), _view(b"/health")) is None
    assert table.match(("cart", "shop", None), _view(b"/health")) is None
    assert len(table) == 6


def test_backends_are_drawn_by_weight() -> None:
    table = compile_routes(_config(ROUTES).routes, "isthmus")
    route = table.match(KEY, _view(b"/v1/x"))
    assert route is not None
    picks = [route.pick(i / 1000) for i in range(1000)]
    assert picks.count(b"checkout.shop.isthmus") == 900
    assert picks.count(b"checkout.shop.gcp-west.isthmus") == 100
    assert route.strip_prefix == b"/v1/"


def test_problems_carry_the_exact_field_path() -> None:
    found = _problems(
        """
[[routes]]
address = "checkout.shop"
match = { path = { regex = "(a+)\\\\1" } }

[[routes]]
address = "checkout"
match = { path = { exact = "/a", prefix = "/b" }, methods = ["get"] }
rewrite_prefix = "/v2/"

[[routes]]
address = "checkout.shop"
backends = [{ service = "checkout.shop", weight = 0 }]
direct_response = { status = 700 }
request_headers = { add = { "connection" = "x" }, remove = ["Bad Name"] }
rate_limit = { requests_per_s = 10, key = "header" }
fault = { percent = 10 }
mirror = { service = "nope" }
"""
    )
    expected = [
        "routes[0].match.path.regex: regex refused: backreferences are not supported",
        "routes[1].address: must be an L7 address",
        "routes[1].match.path: needs exactly one of exact, prefix, regex (got 2)",
        "routes[1].match.methods[0]: must be an uppercase method name",
        "routes[2].backends: at least one backend needs a weight above 0",
        "routes[2].direct_response.status: must be <= 599",
        "routes[2].request_headers.add.connection: 'connection' is reserved",
        "routes[2].request_headers.remove: 'Bad Name'",
        "routes[2].rate_limit.header: is required",
        "routes[2].fault: needs delay_ms, abort_status or abort_reset",
        'routes[2].mirror.service: must be "<service>.<namespace>"',
    ]
    for want in expected:
        assert any(line.startswith(want) for line in found), (want, found)


def test_a_rewrite_needs_a_prefix_match() -> None:
    found = _problems('[[routes]]\naddress = "a.b"\nrewrite_prefix = "/x/"\n')
    assert found == ["routes[0].rewrite_prefix: needs match.path.prefix (the prefix it replaces)"]


def test_a_mirrors_body_bounds_are_checked_with_their_field_paths() -> None:
    found = _problems(
        '[[routes]]\naddress = "a.b"\n'
        'mirror = { service = "s.b", max_body_bytes = 16777217, timeout_s = 0 }\n'
        "[limits]\nmirror_buffer_budget = -1\n"
    )
    assert sorted(found) == [
        "limits.mirror_buffer_budget: must be >= 0, not -1",
        "routes[0].mirror.max_body_bytes: must be <= 16777216, not 16777217",
        "routes[0].mirror.timeout_s: must be >= 0.001, not 0.0",
    ]
    mirror = _config('[[routes]]\naddress = "a.b"\nmirror = { service = "s.b" }\n').routes[0].mirror
    assert mirror is not None and (mirror.max_body_bytes, mirror.timeout_s) == (65536, 10.0)


def test_no_routes_is_the_default() -> None:
    assert _config("").routes == ()


GATES = st.one_of(
    st.none(),
    st.builds(lambda p: PathMatch(exact=p), st.sampled_from(["/", "/a", "/a/b", "/ab", "/b"])),
    st.builds(lambda p: PathMatch(prefix=p), st.sampled_from(["/", "/a", "/a/", "/ab", "/b/"])),
    st.builds(
        lambda p: PathMatch(regex=p),
        st.sampled_from(
            ["/a/[a-z]*", "/a.*", "(?:/a|/b)/.*", "[/ab]+", "/b/?", "/[ab]/.*", "(?:/a/|/b)b*"]
        ),
    ),
)
ROUTE = st.builds(
    lambda path, methods: RouteConfig(address="x.y", match=RouteMatch(path=path, methods=methods)),
    GATES,
    st.sampled_from([(), ("GET",), ("POST",)]),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(ROUTE, min_size=INDEX_MIN_ROUTES + 1, max_size=60),
    st.lists(st.tuples(st.text("/ab?", max_size=6), st.sampled_from([b"GET", b"POST"]))),
)
def test_the_path_index_finds_the_same_first_match_as_a_walk(
    routes: list[RouteConfig], requests: list[tuple[str, bytes]]
) -> None:
    table = compile_routes(tuple(routes), "isthmus")
    key = ("x", "y", None)
    assert key in table.indexes
    for path, method in requests:
        view = _view(("/" + path).encode(), method)
        walked = next((r for r in table.by_address[key] if r.matches(view)), None)
        assert table.match(key, view) is walked


def test_a_pinned_backend_must_name_this_site_or_a_peer() -> None:
    found = _problems(
        '[[routes]]\naddress = "a.b"\n'
        'backends = [{ service = "a.b", site = "aws-east" },'
        ' { service = "a.b", site = "gcp-west" }, { service = "a.b", site = "nowhere" }]\n'
        'mirror = { service = "a.b", site = "elsewhere" }\n'
    )
    assert found == [
        "routes[0].backends[2].site: 'nowhere' is neither this site ('aws-east') "
        "nor a configured peer",
        "routes[0].mirror.site: 'elsewhere' is neither this site ('aws-east') "
        "nor a configured peer",
    ]
