"""``isthmus status`` against a real admin API: ``/workers`` is read when the gateway has
worker processes, and its absence (404 on a single-process gateway) is no error."""

from __future__ import annotations

import argparse
import functools
from typing import Any

import pytest
import trio

from gateway.admin.server import serve_admin
from gateway.commands.status import _status

VIEWS: dict[str, Any] = {
    "/healthz": lambda: {"status": "ok", "site": "a"},
    "/links": lambda: {
        "b": {"up": True, "workers": [{"worker": 0, "up": True}, {"worker": 1, "up": True}]}
    },
    "/imports": lambda: {"peers": []},
    "/routes": lambda: {"local_site": "a", "routes": {}},
    "/catalog": lambda: {"version": 1, "endpoints": [], "sources": []},
}
WORKERS = {"count": 2, "workers": [{"index": 0, "pid": 5, "serving": True, "restarts": 1}]}


async def status_of(views: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    async with trio.open_nursery() as nursery:
        port = await nursery.start(functools.partial(serve_admin, views, host="127.0.0.1", port=0))
        args = argparse.Namespace(admin=f"http://127.0.0.1:{port}", config=None, fleet=None)
        args.json = False
        with trio.fail_after(60):  # hang guard only
            code = await trio.to_thread.run_sync(_status, args)
        nursery.cancel_scope.cancel()
    return code, capsys.readouterr().out


async def test_a_single_process_gateway_has_no_workers_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = await status_of(VIEWS, capsys)
    assert code == 0 and "site a: healthy" in out and "workers:" not in out


async def test_workers_are_read_and_one_missing_is_degraded(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out = await status_of({**VIEWS, "/workers": lambda: WORKERS}, capsys)
    assert code == 1
    assert "workers: 1 of 2 up, 1 restart" in out and "- workers: 1 of 2 up" in out
