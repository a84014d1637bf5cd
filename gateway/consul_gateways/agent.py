"""The few Consul agent endpoints gateway discovery uses, on the discovery source's trio HTTP
client (same bounds, deadlines, TLS, connection limits and typed errors as the Consul source):

* ``PUT /v1/agent/service/register`` -- this gateway as ``isthmus-gateway`` with a TTL check;
* ``PUT /v1/agent/check/pass/:check_id`` -- the heartbeat;
* ``PUT /v1/agent/service/deregister/:service_id`` -- on shutdown;
* ``GET /v1/health/service/isthmus-gateway?passing`` -- blocking (``index``, ``wait``).

The ACL token goes in the ``X-Consul-Token`` header only (never a query string, which a proxy
might log) and is registered with the log redaction when read (:func:`read_token`).
"""

from __future__ import annotations

import json
from typing import Any

import trio

from discovery.sources.config import ConsulSourceConfig
from discovery.sources.consul import build_client
from discovery.sources.consul_http import TrioHTTPClient, status_error
from discovery.sources.consul_parse import (
    ConsulMalformedResponse,
    ConsulTimeout,
    format_wait,
    parse_index,
)
from gateway.consul_gateways.meta import SERVICE
from gateway.fleet.consul_kv import read_token


class GatewayAgent:
    """One Consul agent, with an ACL token and datacenter, for gateway registration."""

    def __init__(self, client: TrioHTTPClient, *, token: str | None, dc: str | None) -> None:
        self.client = client
        self.token = token
        self.dc = dc

    async def register(self, body: dict[str, Any]) -> None:
        await self._call("PUT", "/v1/agent/service/register", [], json.dumps(body).encode())

    async def pass_check(self, check_id: str) -> None:
        await self._call("PUT", f"/v1/agent/check/pass/{check_id}", [], b"")

    async def deregister(self, service_id: str) -> None:
        await self._call("PUT", f"/v1/agent/service/deregister/{service_id}", [], b"")

    async def gateways(self, *, index: int = 0, wait_s: float = 60.0) -> tuple[int, object]:
        """The passing ``isthmus-gateway`` instances (decoded JSON) and the index to block on
        next; with ``index`` > 0, a blocking read answered on a change or after ``wait_s``."""
        params: list[tuple[str, Any]] = [("passing", "1")]
        if index > 0:
            params += [("index", str(index)), ("wait", format_wait(wait_s))]
        if self.dc:
            params.append(("dc", self.dc))
        headers, body = await self._call("GET", f"/v1/health/service/{SERVICE}", params, b"")
        try:
            data = json.loads(body)
        except ValueError as err:
            raise ConsulMalformedResponse(f"GET /v1/health/service/{SERVICE}: {err}") from None
        return parse_index(headers.get("X-Consul-Index")), data

    async def _call(
        self, method: str, path: str, params: list[tuple[str, Any]], body: bytes
    ) -> tuple[Any, str]:
        headers = {"X-Consul-Token": self.token} if self.token else {}
        client = self.client
        timeout = client.deadline_for(params)
        blocking = any(k == "index" for k, _ in params)
        async with client.limiter if blocking else client.quick_limiter:
            with trio.move_on_after(timeout) as scope:
                answer = await client.request(method, client.target(path, params), headers, body)
        if scope.cancelled_caught:
            raise ConsulTimeout(f"{method} {path}: no complete answer within {timeout:.1f}s")
        if answer.code >= 400:
            raise status_error(answer.code, method, path, answer.body)
        return answer.headers, answer.body


async def open_agent(config: ConsulSourceConfig) -> GatewayAgent:
    """A :class:`GatewayAgent` for the agent of the Consul source ``config``."""
    return GatewayAgent(build_client(config), token=await read_token(config), dc=config.datacenter)
