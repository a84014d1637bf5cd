"""Admin actions: POST paths (``/config/reload``) beside the GET views, on a real socket."""

from __future__ import annotations

import functools
import http.client
import json
from typing import Any

import trio

from gateway.admin.server import Reply, serve_admin


def _request(
    port: int,
    method: str,
    path: str,
    body: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


async def test_actions_answer_post_views_answer_get_and_a_failing_action_is_a_500() -> None:
    calls: list[str] = []

    async def reload() -> Reply:
        calls.append("reload")
        await trio.lowlevel.checkpoint()
        return Reply(422, {"result": "rejected"})

    async def broken() -> Reply:
        raise RuntimeError("boom")

    views = {"/config": lambda: {"version": "abc"}}
    actions = {"/config/reload": reload, "/broken": broken}
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            functools.partial(serve_admin, views, actions=actions, host="127.0.0.1", port=0)
        )

        def run(*args: Any) -> tuple[int, Any]:
            return _request(port, *args)

        posted = await trio.to_thread.run_sync(run, "POST", "/config/reload", b"ignored")
        as_get = await trio.to_thread.run_sync(run, "GET", "/config/reload")
        view_post = await trio.to_thread.run_sync(run, "POST", "/config")
        failed = await trio.to_thread.run_sync(run, "POST", "/broken")
        view = await trio.to_thread.run_sync(run, "GET", "/config")
        nursery.cancel_scope.cancel()
    assert posted == (422, {"result": "rejected"}) and calls == ["reload"]
    assert as_get[0] == 405 and "POST" in as_get[1]["error"]
    assert view_post[0] == 404 and view_post[1]["actions"] == ["/broken", "/config/reload"]
    assert failed == (500, {"error": "RuntimeError: boom"})
    assert view == (200, {"version": "abc"})


async def test_an_action_refuses_a_browser_post_from_another_origin() -> None:
    """The admin listener serves a page, so browsers visit it: another site's page must not
    make a browser reload the config (CSRF); the page's own origin and non-browsers may."""
    calls: list[str] = []

    async def reload() -> Reply:
        calls.append("reload")
        await trio.lowlevel.checkpoint()
        return Reply(200, {"result": "unchanged"})

    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            functools.partial(
                serve_admin, {}, actions={"/config/reload": reload}, host="127.0.0.1", port=0
            )
        )
        own = f"http://127.0.0.1:{port}"

        def post(origin: str | None) -> tuple[int, Any]:
            headers = {} if origin is None else {"Origin": origin}
            return _request(port, "POST", "/config/reload", None, headers)

        evil = await trio.to_thread.run_sync(post, "http://evil.example")
        other_port = await trio.to_thread.run_sync(post, "http://127.0.0.1:1")
        opaque = await trio.to_thread.run_sync(post, "null")
        same = await trio.to_thread.run_sync(post, own)
        cli = await trio.to_thread.run_sync(post, None)
        nursery.cancel_scope.cancel()
    assert [evil[0], other_port[0], opaque[0]] == [403, 403, 403]
    assert "cross-origin" in evil[1]["error"]
    assert same == cli == (200, {"result": "unchanged"})
    assert calls == ["reload", "reload"]
