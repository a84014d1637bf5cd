"""``GET /explain``: the question parsed strictly (pure), and a query path served on a real
admin socket with its query string."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import pytest
import trio

from gateway.admin.explain_view import BadQuestion, parse_question
from gateway.admin.server import Reply, serve_admin
from tests.gateway.admin.test_actions import _request


def test_a_url_with_path_headers_and_caller() -> None:
    request, caller, origin = parse_question(
        {
            "url": ["http://api.default.isthmus/a/b?x=1"],
            "method": ["post"],
            "header": ["X-User: u1", "authorization: Bearer t"],
            "caller_id": ["spiffe://a.test/ns/default/sa/web"],
            "from": ["a"],
        }
    )
    assert request.authority == b"api.default.isthmus" and request.path == b"/a/b?x=1"
    assert request.method == b"POST"
    assert request.headers == ((b"x-user", b"u1"), (b"authorization", b"Bearer t"))
    assert str(caller) == "spiffe://a.test/ns/default/sa/web" and origin == "a"
    bare, _, _ = parse_question({"url": ["api.default.isthmus:8080"]})
    assert bare.authority == b"api.default.isthmus:8080" and bare.path == b"/"


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({}, "url"),
        ({"url": ["http:///x"]}, "url"),
        ({"url": ["a.b.isthmus", "c.d.isthmus"]}, "url"),
        ({"url": ["a.b.isthmus"], "method": ["G E T"]}, "method"),
        ({"url": ["a.b.isthmus"], "header": ["no colon"]}, "header"),
        ({"url": ["a.b.isthmus"], "header": ["host: x"]}, "header host"),
        ({"url": ["a.b.isthmus"], "header": ["x: a\r\nb"]}, "header x"),
        ({"url": ["a.b.isthmus"], "header": ["x: 1"] * 33}, "header"),
        ({"url": ["a.b.isthmus"], "caller_id": ["not-spiffe"]}, "caller_id"),
    ],
)
def test_a_malformed_question_says_which_parameter(
    params: Mapping[str, list[str]], where: str
) -> None:
    with pytest.raises(BadQuestion, match=f"^{where}"):
        parse_question(params)


async def test_a_query_path_reads_its_query_string_and_may_answer_400() -> None:
    seen: list[Mapping[str, list[str]]] = []

    async def query(params: Mapping[str, list[str]]) -> Any:
        seen.append(params)
        await trio.lowlevel.checkpoint()
        if "url" not in params:
            return Reply(400, {"error": "url: required"})
        return {"ok": params["url"][0]}

    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            functools.partial(
                serve_admin, {}, queries={"/explain": query}, host="127.0.0.1", port=0
            )
        )
        ok = await trio.to_thread.run_sync(_request, port, "GET", "/explain?url=a.b.isthmus")
        bad = await trio.to_thread.run_sync(_request, port, "GET", "/explain")
        nursery.cancel_scope.cancel()
    assert ok == (200, {"ok": "a.b.isthmus"})
    assert bad == (400, {"error": "url: required"})
    assert seen[0] == {"url": ["a.b.isthmus"]}
