"""Consul KV on the discovery source's trio HTTP client: get (blocking), put (CAS), delete.

Why not py-consul's ``kv`` object: its callbacks turn a 404 into "no data" only by reading
the status themselves, while :class:`~discovery.sources.consul_http.TrioHTTPClient` raises
typed errors for every status >= 400 before a callback runs -- and for KV a 404 is an answer
(the key is absent) that still carries the ``X-Consul-Index`` to block on.  So this module
sends its requests through the same client (same bounds, deadlines, TLS and connection
limits) and reads the few documented fields itself.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

import trio

from discovery.sources.config import ConsulSourceConfig
from discovery.sources.consul import build_client
from discovery.sources.consul_http import TrioHTTPClient, status_error
from discovery.sources.consul_parse import (
    ConsulConfigError,
    ConsulMalformedResponse,
    ConsulTimeout,
    format_wait,
    parse_index,
)
from foundation.redact import remember_secret


@dataclass(frozen=True, slots=True)
class KvEntry:
    key: str
    value: bytes
    modify_index: int


class ConsulKv:
    """The KV endpoints of one Consul agent, with an ACL token and datacenter."""

    def __init__(self, client: TrioHTTPClient, *, token: str | None, dc: str | None) -> None:
        self.client = client
        self.token = token
        self.dc = dc

    async def get(
        self, key: str, *, index: int = 0, wait_s: float | None = None
    ) -> tuple[int, KvEntry | None]:
        """The entry at ``key`` (None: absent) and the index to block on next; with ``index``
        > 0, a blocking read that answers when the key changes or ``wait_s`` ran out."""
        params: list[tuple[str, Any]] = []
        if index > 0:
            params += [("index", str(index)), ("wait", format_wait(wait_s or 60.0))]
        code, headers, body = await self._call("GET", key, params, b"", blocking=index > 0)
        received = parse_index(headers.get("X-Consul-Index"))
        if code == 404:
            return received, None
        try:
            return received, _entry(json.loads(body)[0])
        except (ValueError, KeyError, IndexError, TypeError, AttributeError, binascii.Error) as err:
            raise ConsulMalformedResponse(f"GET /v1/kv/{key}: {type(err).__name__}") from None

    async def entries(self, prefix: str) -> list[KvEntry]:
        """Every entry under ``prefix`` (``?recurse``), sorted by key; empty when none."""
        code, _, body = await self._call("GET", prefix, [("recurse", "")], b"")
        if code == 404:
            return []
        try:
            return [_entry(item) for item in json.loads(body)]
        except (ValueError, KeyError, TypeError, AttributeError, binascii.Error) as err:
            raise ConsulMalformedResponse(
                f"GET /v1/kv/{prefix}?recurse: {type(err).__name__}"
            ) from None

    async def keys(self, prefix: str) -> list[str]:
        """The keys under ``prefix`` (empty when none)."""
        code, _, body = await self._call("GET", prefix, [("keys", "")], b"")
        if code == 404:
            return []
        try:
            names = json.loads(body)
        except ValueError:
            names = None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ConsulMalformedResponse(f"GET /v1/kv/{prefix}?keys: not a list of keys")
        return names

    async def put(self, key: str, value: bytes, *, cas: int | None = None) -> bool:
        """Write ``value``; with ``cas``, only if the key's ModifyIndex is ``cas`` (0: absent)."""
        params = [] if cas is None else [("cas", str(cas))]
        return await self._bool("PUT", key, params, value)

    async def delete(self, key: str, *, cas: int | None = None) -> bool:
        params = [] if cas is None else [("cas", str(cas))]
        return await self._bool("DELETE", key, params, b"")

    async def _bool(
        self, method: str, key: str, params: list[tuple[str, Any]], body: bytes
    ) -> bool:
        _, _, text = await self._call(method, key, params, body)
        if text.strip() not in ("true", "false"):
            raise ConsulMalformedResponse(f"{method} /v1/kv/{key}: expected true or false")
        return text.strip() == "true"

    async def _call(
        self,
        method: str,
        key: str,
        params: list[tuple[str, Any]],
        body: bytes,
        *,
        blocking: bool = False,
    ) -> tuple[int, Any, str]:
        path = f"/v1/kv/{key}"
        if self.dc:
            params = [*params, ("dc", self.dc)]
        headers = {"X-Consul-Token": self.token} if self.token else {}
        timeout = self.client.deadline_for(params)
        client = self.client
        async with client.limiter if blocking else client.quick_limiter:
            with trio.move_on_after(timeout) as scope:
                answer = await client.request(method, client.target(path, params), headers, body)
        if scope.cancelled_caught:
            raise ConsulTimeout(f"{method} {path}: no complete answer within {timeout:.1f}s")
        if answer.code >= 400 and not (answer.code == 404 and method == "GET"):
            raise status_error(answer.code, method, path, answer.body)
        return answer.code, answer.headers, answer.body


def _entry(item: Any) -> KvEntry:
    """One documented KV entry: ``Key``, ``ModifyIndex``, ``Value`` (base64 or null)."""
    raw = item.get("Value")
    value = base64.b64decode(raw, validate=True) if raw else b""
    return KvEntry(str(item["Key"]), value, int(item["ModifyIndex"]))


async def read_token(config: ConsulSourceConfig) -> str | None:
    """The source's ACL token (``token`` or ``token_file``), registered so logs never show it."""
    token = config.token
    if token is None and config.token_file is not None:
        try:
            token = (await trio.Path(config.token_file).read_text()).strip() or None
        except OSError as err:
            raise ConsulConfigError(f"token_file {config.token_file}: {err}") from err
    if token is not None:
        remember_secret(token)
    return token


async def open_kv(config: ConsulSourceConfig) -> ConsulKv:
    """A :class:`ConsulKv` for the agent of the Consul source ``config``."""
    return ConsulKv(build_client(config), token=await read_token(config), dc=config.datacenter)
