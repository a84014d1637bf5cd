"""Fixtures shared by the gateway's tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.http import h1_fast


@pytest.fixture(scope="module", params=["httptools", "python"])
def h1_parser(request: pytest.FixtureRequest) -> Iterator[str]:
    """Run a module's tests once with llhttp tokenising HTTP/1.1 heads and once with the
    pure-Python parser (``http1_parser = "auto"`` then resolves to it): every rule must hold
    with both.  Module-scoped, so hypothesis tests may use it too."""
    choice: str = request.param
    if choice == "httptools" and not h1_fast.AVAILABLE:
        pytest.skip("httptools is not installed")
    saved = h1_fast.AVAILABLE, h1_fast.httptools
    if choice == "python":
        h1_fast.AVAILABLE, h1_fast.httptools = False, None
    try:
        yield choice
    finally:
        h1_fast.AVAILABLE, h1_fast.httptools = saved
