"""Routes for tests, from TOML (this module holds no tests)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from gateway.config.load import load_text
from gateway.config.routes import RouteConfig
from gateway.routes.forward import Mirrors, RouteRules
from tests.gateway.config.config_kit import GOOD

#: The good config as site "a" with peer "b" (the sites of the router kit).
SITES_AB = GOOD.replace('name = "aws-east"', 'name = "a"').replace(
    'name = "gcp-west"', 'name = "b"'
)


def routes(toml: str) -> tuple[RouteConfig, ...]:
    return load_text(SITES_AB + toml, base_dir=Path("/etc/isthmus")).routes


def draws(values: Iterable[float]) -> Callable[[], float]:
    """A draw that hands out ``values`` in order (then fails: a test must say every draw)."""
    it = iter(values)
    return lambda: next(it)


def rules(toml: str, *, mirrors: Mirrors | None = None, **kw: Any) -> RouteRules:
    return RouteRules.build(routes(toml), mesh_domain="isthmus", mirrors=mirrors or Mirrors(), **kw)
