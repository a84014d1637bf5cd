"""The admin API client's errors never quote a query string (``/explain``'s carries the
``-H`` header values, credentials maybe)."""

from __future__ import annotations

import socket
import urllib.parse

import pytest

from gateway.commands.admin_api import AdminError, get_json_status


def _closed_port() -> int:
    with socket.socket() as sock:  # bound, never listening: connections are refused
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_an_unreachable_admin_api_is_named_without_the_query() -> None:
    query = urllib.parse.urlencode({"header": "authorization: Bearer s3cr3t-0001"})
    url = f"http://127.0.0.1:{_closed_port()}/explain?{query}"
    with pytest.raises(AdminError) as info:
        get_json_status(url, timeout=5)
    assert "s3cr3t" not in str(info.value) and "/explain" in str(info.value)
