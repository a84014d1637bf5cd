"""``isthmus explain`` names the ``[[routes]]`` entry that takes a request, without a draw.

Why: the trace must say what the router would do, and with routes the first decision is the
route (a split's backends, an answer from the gateway itself) before any site is walked.
"""

from __future__ import annotations

import math
from types import SimpleNamespace
from typing import Any, cast

from gateway.http.exchange import CallContext, Request
from gateway.router.explain_run import route_of
from gateway.router.route import Router
from tests.gateway.routes.routes_kit import rules

SPLIT = """
[[routes]]
name = "canary"
address = "api.default"
match = { path = { prefix = "/v1/" } }
backends = [{ service = "api.default", site = "a", weight = 90 },
            { service = "api.default", site = "b", weight = 10 }]

[[routes]]
name = "maintenance"
address = "shop.default"
direct_response = { status = 503, body = "back soon" }
"""


def _router(toml: str | None) -> Router:
    def no_draw() -> float:
        raise AssertionError("explain must not draw")

    found: Any = SimpleNamespace(rules=None if toml is None else rules(toml, draw=no_draw))
    return cast(Router, found)


def _request(authority: str, path: str = "/v1/x") -> Request:
    return Request(b"GET", b"http", authority.encode(), path.encode(), [])


CTX = CallContext(caller_site="a", caller_id=None, deadline=math.inf)


def test_a_split_is_named_with_every_backend_and_the_walk_takes_the_heaviest() -> None:
    found = route_of(_router(SPLIT), _request("api.default.isthmus"), CTX)
    assert found is not None
    label, answer, request = found
    assert answer is None
    assert label.startswith("canary (backends api.default.a.isthmus 90/100, ")
    assert "api.default.b.isthmus 10/100" in label
    assert request.authority == b"api.default.a.isthmus"


def test_a_direct_response_is_the_answer_and_nothing_is_walked() -> None:
    found = route_of(_router(SPLIT), _request("shop.default.isthmus", "/"), CTX)
    assert found is not None
    label, answer, _ = found
    assert label == "maintenance"
    assert answer is not None and answer[0] == 503 and "direct_response" in answer[1]


def test_no_route_or_no_match_is_the_default_walk() -> None:
    assert route_of(_router(None), _request("api.default.isthmus"), CTX) is None
    assert route_of(_router(SPLIT), _request("api.default.isthmus", "/v2/x"), CTX) is None
    assert route_of(_router(SPLIT), _request("web.default.isthmus"), CTX) is None
