"""A tiny client for the admin API (used by the demo supervisor and the end-to-end tests)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import trio

# Never route admin calls through an HTTP proxy from the environment: they go to loopback.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class AdminUnavailable(Exception):
    """The admin API did not answer (yet)."""


def _get(url: str, timeout: float) -> Any:
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return json.loads(response.read(16 * 1024 * 1024))
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise AdminUnavailable(f"{url}: {exc}") from exc


async def admin_get(base_url: str, path: str, *, request_timeout_s: float = 3.0) -> Any:
    """GET ``base_url + path`` and decode the JSON (in a worker thread, bounded)."""
    url = base_url + path
    return await trio.to_thread.run_sync(_get, url, request_timeout_s, abandon_on_cancel=True)


async def wait_for(
    base_url: str,
    path: str,
    predicate: Callable[[Any], object],
    *,
    within_s: float,
    interval: float = 0.1,
) -> Any:
    """Poll ``path`` until ``predicate(json)`` is truthy; return that JSON document.

    Raises ``trio.TooSlowError`` (with the last answer seen) after ``within_s`` seconds.
    """
    last: Any = None
    with trio.move_on_after(within_s):
        while True:
            try:
                last = await admin_get(base_url, path)
            except AdminUnavailable as exc:
                last = exc
            else:
                if predicate(last):
                    return last
            await trio.sleep(interval)
    raise trio.TooSlowError(f"{base_url}{path}: condition not met in {within_s}s; last: {last!r}")
