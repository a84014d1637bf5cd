"""Reading a running gateway's admin API from a command (``status``, ``explain``).

Why not a pid file or a socket: the admin API already serves every view, bounded and
read-only.  The URL is ``--admin URL``, else the admin listener of ``--config``, else
``http://127.0.0.1:15000`` (the port the shipped configs use).  Admin calls never go through
an HTTP proxy from the environment.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from gateway.commands.reload import admin_url

DEFAULT_ADMIN_URL = "http://127.0.0.1:15000"
MAX_REPLY_BYTES = 16 * 1024 * 1024
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class AdminError(Exception):
    """The admin API could not be reached, or did not answer JSON (the message says which)."""


def base_url(admin: str | None, config: Path | None) -> str:
    """The admin API's base URL (raises ``ValueError`` / ``ConfigInvalid`` for bad input)."""
    if admin:
        split = urllib.parse.urlsplit(admin)
        if split.scheme not in ("http", "https") or not split.netloc:
            raise ValueError(f"--admin {admin!r}: expected a URL like http://127.0.0.1:15000")
        return admin.rstrip("/")
    if config is not None:
        return admin_url(config)
    return DEFAULT_ADMIN_URL


def get_json(url: str, *, timeout: float, allow: tuple[int, ...] = ()) -> Any:
    """GET ``url`` and decode its JSON; an HTTP error status in ``allow`` still counts as an
    answer (``/healthz`` answers 503 when not ok, ``/explain`` 400 for a bad question)."""
    return get_json_status(url, timeout=timeout, allow=allow)[1]


def get_json_status(url: str, *, timeout: float, allow: tuple[int, ...] = ()) -> tuple[int, Any]:
    """:func:`get_json` with the answer's HTTP status.  Error messages name the URL without
    its query string: ``/explain``'s carries the ``-H`` header values (credentials, maybe)."""
    shown = url.partition("?")[0]
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status, json.loads(response.read(MAX_REPLY_BYTES))
    except urllib.error.HTTPError as exc:
        if exc.code in allow:
            try:
                return exc.code, json.loads(exc.read(MAX_REPLY_BYTES))
            except ValueError:
                pass
        raise AdminError(f"{shown}: HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise AdminError(f"cannot reach the admin API at {shown}: {exc}") from None
    except ValueError as exc:
        raise AdminError(f"{shown}: not a JSON answer: {exc}") from None
