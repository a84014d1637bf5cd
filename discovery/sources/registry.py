"""Which function serves which ``[[sources]]`` kind.

Every source implements exactly::

    async def serve_<kind>_source(
        config, send: trio.MemorySendChannel[Event], *, task_status=trio.TASK_STATUS_IGNORED
    ) -> None

Modules are imported lazily, when a config actually uses that kind: a gateway with only static
sources never imports zeroconf, and a kind whose module is missing from this installation is a
clear :class:`SourceUnavailable` naming the module, not an ImportError deep in a nursery.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable
from typing import Any, Protocol

import trio

from discovery.events import Event
from foundation.errors import ConfigError

KINDS: dict[str, tuple[str, str]] = {
    "static": ("discovery.sources.static", "serve_static_source"),
    "mdns": ("discovery.sources.mdns", "serve_mdns_source"),
    "consul": ("discovery.sources.consul", "serve_consul_source"),
}


class ServeSource(Protocol):
    def __call__(
        self,
        config: Any,
        send: trio.MemorySendChannel[Event],
        *,
        task_status: trio.TaskStatus[None] = ...,
    ) -> Awaitable[None]: ...


class SourceUnavailable(ConfigError):
    """A configured source kind has no implementation in this installation."""


def serve_function(kind: str) -> ServeSource:
    """The serve function for source ``kind``; raises :class:`SourceUnavailable`."""
    try:
        module_name, function_name = KINDS[kind]
    except KeyError:
        known = ", ".join(sorted(KINDS))
        raise SourceUnavailable(f"unknown source kind {kind!r} (known: {known})") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:  # the module, or a library it needs (zeroconf, consul)
        missing = getattr(exc, "name", None) or module_name
        raise SourceUnavailable(
            f"source kind {kind!r} is not available: cannot import {module_name} "
            f"({missing} is missing: {exc})"
        ) from None
    function = getattr(module, function_name, None)
    if function is None:
        raise SourceUnavailable(
            f"source kind {kind!r} is not available: {module_name} has no {function_name}()"
        )
    serve: ServeSource = function
    return serve
