"""The agent endpoints of the Consul-API test server that gateway registration uses, against
HashiCorp's documented behaviour: ``PUT /v1/agent/service/register`` with a TTL check,
``PUT /v1/agent/check/{pass,update}/:check_id``, the TTL running out (critical, ``TTL
expired``), ``PUT /v1/agent/service/deregister/:service_id``, and ``?passing`` reads.

Real sockets (the server on loopback, the product's Consul client); short real TTLs, every
wait bounded by a hang guard; nothing asserts how fast anything is.
"""

from __future__ import annotations

import json

import trio

from discovery.sources.consul_http import TrioHTTPClient
from discovery.sources.consul_parse import ConsulHttpError
from gateway.consul_gateways.agent import GatewayAgent
from tests.consul_api.server import open_consul_api_server

GUARD_S = 30.0
TTL = 0.3


def _body(sid: str, ttl: str = "300ms") -> dict[str, object]:
    return {
        "ID": sid,
        "Name": "isthmus-gateway",
        "Port": 1,
        "Meta": {"isthmus-site": "b"},
        "Check": {"CheckID": f"service:{sid}", "TTL": ttl, "Status": "passing"},
    }


async def _ids(agent: GatewayAgent) -> list[str]:
    _index, data = await agent.gateways()
    assert isinstance(data, list)
    return sorted(e["Service"]["ID"] for e in data)


async def test_ttl_check_expires_passes_again_and_deregisters() -> None:
    async with open_consul_api_server(seed=1) as srv:
        agent = GatewayAgent(
            TrioHTTPClient(srv.host, srv.port, "http", ssl_context=None), token=None, dc=None
        )
        with trio.fail_after(GUARD_S):
            await agent.register(_body("g1"))
            assert await _ids(agent) == ["g1"]
            # No heartbeat: the TTL runs out, the check turns critical, ?passing hides it.
            index, _ = await agent.gateways()
            received, data = await agent.gateways(index=index, wait_s=GUARD_S)
            assert received > index and data == []
            check = srv.store.checks[(srv.node_name, "service:g1")]
            assert (check.status, check.output) == ("critical", "TTL expired")
            # A pass brings it back; a pass that changes nothing moves no index.
            await agent.pass_check("service:g1")
            assert await _ids(agent) == ["g1"]
            index, _ = await agent.gateways()
            await agent.pass_check("service:g1")
            assert (await agent.gateways())[0] == index
            # update with a body (documented: Status, Output).
            await agent._call(
                "PUT",
                "/v1/agent/check/update/service:g1",
                [],
                json.dumps({"Status": "warning", "Output": "busy"}).encode(),
            )
            assert srv.store.checks[(srv.node_name, "service:g1")].status == "warning"
            await agent.deregister("g1")
            assert await _ids(agent) == []
            try:
                await agent.pass_check("service:g1")
            except ConsulHttpError as exc:
                assert "404" in str(exc)
            else:
                raise AssertionError("a pass of a deregistered check must be a 404")


async def test_a_heartbeat_keeps_it_passing() -> None:
    async with open_consul_api_server(seed=1) as srv:
        agent = GatewayAgent(
            TrioHTTPClient(srv.host, srv.port, "http", ssl_context=None), token=None, dc=None
        )
        with trio.fail_after(GUARD_S):
            await agent.register(_body("g1", ttl="3s"))
            for _ in range(8):  # 8 passes 0.5 s apart span more than the TTL
                await trio.sleep(0.5)
                await agent.pass_check("service:g1")
                assert await _ids(agent) == ["g1"]
