"""The KV endpoints of the Consul-API test server, against HashiCorp's documented behaviour.

Real sockets (the server on loopback, the product's trio HTTP client); every wait is bounded
by a hang guard, and no test asserts how fast anything is.
"""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from discovery.sources.consul_http import TrioHTTPClient
from tests.consul_api.server import ConsulApiServer, open_consul_api_server

GUARD_S = 30.0


class Client:
    def __init__(self, server: ConsulApiServer, token: str | None = None) -> None:
        self.http = TrioHTTPClient(server.host, server.port, "http", ssl_context=None)
        self.headers = {"X-Consul-Token": token} if token else {}

    async def call(self, method: str, target: str, body: bytes = b"") -> tuple[int, Any, Any]:
        with trio.fail_after(GUARD_S):
            r = await self.http.request(method, target, self.headers, body)
        index = r.headers.get("X-Consul-Index")
        try:
            doc = json.loads(r.body) if r.body else None
        except ValueError:
            doc = r.body
        return r.code, (int(index) if index else None), doc


@pytest.fixture
async def server() -> AsyncIterator[ConsulApiServer]:
    async with open_consul_api_server(seed=1) as srv:
        yield srv


async def test_put_get_base64_and_indexes(server: ConsulApiServer) -> None:
    c = Client(server)
    assert await c.call("PUT", "/v1/kv/app/one?flags=42", b"hello") == (200, None, True)
    code, index, doc = await c.call("GET", "/v1/kv/app/one")
    assert code == 200
    (entry,) = doc
    assert entry["Key"] == "app/one" and entry["Flags"] == 42 and entry["LockIndex"] == 0
    assert base64.b64decode(entry["Value"]) == b"hello"
    assert entry["CreateIndex"] == entry["ModifyIndex"] == index
    await c.call("PUT", "/v1/kv/app/one", b"again")
    _, index2, doc2 = await c.call("GET", "/v1/kv/app/one")
    assert index2 > index and doc2[0]["CreateIndex"] == index
    assert doc2[0]["ModifyIndex"] == index2 and doc2[0]["Flags"] == 0
    # ?raw: the bare value.
    raw = await c.http.request("GET", "/v1/kv/app/one?raw", {}, b"")
    assert raw.code == 200 and raw.body == "again"
    # An empty value is null.
    await c.call("PUT", "/v1/kv/app/empty", b"")
    assert (await c.call("GET", "/v1/kv/app/empty"))[2][0]["Value"] is None


async def test_absent_key_is_404_with_an_index(server: ConsulApiServer) -> None:
    c = Client(server)
    code, index, doc = await c.call("GET", "/v1/kv/nothing/here")
    assert code == 404 and doc is None and index is not None and index >= 1
    assert (await c.call("GET", "/v1/kv/nothing/?recurse"))[0] == 404
    assert (await c.call("GET", "/v1/kv/nothing/?keys"))[0] == 404


async def test_recurse_keys_and_separator(server: ConsulApiServer) -> None:
    c = Client(server)
    for key in ("p/b", "p/a", "p/dir/x", "p/dir/y", "q/z"):
        await c.call("PUT", f"/v1/kv/{key}", key.encode())
    code, index, doc = await c.call("GET", "/v1/kv/p/?recurse")
    assert code == 200
    assert [e["Key"] for e in doc] == ["p/a", "p/b", "p/dir/x", "p/dir/y"]
    assert index == max(e["ModifyIndex"] for e in doc)
    assert (await c.call("GET", "/v1/kv/p/?keys"))[2] == ["p/a", "p/b", "p/dir/x", "p/dir/y"]
    assert (await c.call("GET", "/v1/kv/p/?keys&separator=/"))[2] == ["p/a", "p/b", "p/dir/"]
    # A delete under the prefix moves its index (a tombstone), though the entry is gone.
    assert (await c.call("DELETE", "/v1/kv/p/b"))[2] is True
    _, after, doc = await c.call("GET", "/v1/kv/p/?recurse")
    assert after > index and [e["Key"] for e in doc] == ["p/a", "p/dir/x", "p/dir/y"]
    assert (await c.call("DELETE", "/v1/kv/p/dir/?recurse"))[2] is True
    assert (await c.call("GET", "/v1/kv/p/?keys"))[2] == ["p/a"]
    assert (await c.call("GET", "/v1/kv/q/z"))[0] == 200


async def test_cas(server: ConsulApiServer) -> None:
    c = Client(server)
    assert (await c.call("PUT", "/v1/kv/k?cas=0", b"1"))[2] is True
    assert (await c.call("PUT", "/v1/kv/k?cas=0", b"2"))[2] is False  # exists already
    _, index, doc = await c.call("GET", "/v1/kv/k")
    assert base64.b64decode(doc[0]["Value"]) == b"1"
    assert (await c.call("PUT", f"/v1/kv/k?cas={index + 100}", b"3"))[2] is False
    assert (await c.call("PUT", f"/v1/kv/k?cas={index}", b"4"))[2] is True
    _, index2, doc = await c.call("GET", "/v1/kv/k")
    assert base64.b64decode(doc[0]["Value"]) == b"4"
    # The old index no longer matches: a concurrent writer that read before loses.
    assert (await c.call("PUT", f"/v1/kv/k?cas={index}", b"5"))[2] is False
    assert (await c.call("DELETE", f"/v1/kv/k?cas={index}"))[2] is False
    assert (await c.call("GET", "/v1/kv/k"))[0] == 200
    assert (await c.call("DELETE", f"/v1/kv/k?cas={index2}"))[2] is True
    assert (await c.call("GET", "/v1/kv/k"))[0] == 404
    assert (await c.call("PUT", "/v1/kv/k?cas=x", b""))[0] == 400


async def test_blocking_read_returns_on_change(server: ConsulApiServer) -> None:
    c = Client(server)
    await c.call("PUT", "/v1/kv/w/key", b"v1")
    _, index, _ = await c.call("GET", "/v1/kv/w/?recurse")
    answers: list[tuple[int, Any, Any]] = []

    async def block() -> None:
        answers.append(await c.call("GET", f"/v1/kv/w/?recurse&index={index}&wait=5m"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(block)
        with trio.fail_after(GUARD_S):
            while server.parked == 0:  # noqa: ASYNC110 -- a counter, nothing to wait on
                await trio.sleep(0.01)
        assert not answers  # parked, not answered
        await c.call("PUT", "/v1/kv/other", b"x")  # outside the prefix: still parked
        await trio.sleep(0.05)
        assert not answers and server.parked == 1
        await c.call("PUT", "/v1/kv/w/key", b"v2")
    ((code, new_index, doc),) = answers
    assert code == 200 and new_index > index
    assert base64.b64decode(doc[0]["Value"]) == b"v2"


async def test_blocking_read_returns_after_wait(server: ConsulApiServer) -> None:
    c = Client(server)
    await c.call("PUT", "/v1/kv/w/key", b"v1")
    _, index, _ = await c.call("GET", "/v1/kv/w/key")
    code, same, doc = await c.call("GET", f"/v1/kv/w/key?index={index}&wait=200ms")
    assert code == 200 and same == index
    assert base64.b64decode(doc[0]["Value"]) == b"v1"


async def test_blocking_on_an_absent_key_wakes_when_it_appears(server: ConsulApiServer) -> None:
    c = Client(server)
    code, index, _ = await c.call("GET", "/v1/kv/later")
    assert code == 404
    answers: list[tuple[int, Any, Any]] = []

    async def block() -> None:
        answers.append(await c.call("GET", f"/v1/kv/later?index={index}&wait=5m"))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(block)
        with trio.fail_after(GUARD_S):
            while server.parked == 0:  # noqa: ASYNC110 -- a counter, nothing to wait on
                await trio.sleep(0.01)
        server.kv.put("later", b"now")
    ((code, new_index, doc),) = answers
    assert code == 200 and new_index > index and doc[0]["Key"] == "later"


async def test_acl_token() -> None:
    async with open_consul_api_server(acl_token="secret") as server:
        anon, good, bad = Client(server), Client(server, "secret"), Client(server, "nope")
        assert (await anon.call("PUT", "/v1/kv/a", b"1"))[0] == 403
        assert (await bad.call("PUT", "/v1/kv/a", b"1"))[0] == 403
        assert (await good.call("PUT", "/v1/kv/a", b"1"))[2] is True
        assert (await anon.call("GET", "/v1/kv/a"))[0] == 403
        r = await anon.http.request("GET", "/v1/kv/?recurse", {}, b"")
        assert r.code == 404 and r.headers.get("X-Consul-Results-Filtered-By-ACLs") == "true"
        assert (await good.call("GET", "/v1/kv/?recurse"))[0] == 200


async def test_value_size_limit(server: ConsulApiServer) -> None:
    c = Client(server)
    assert (await c.call("PUT", "/v1/kv/big", b"x" * (512 * 1024 + 1)))[0] == 413
    assert (await c.call("PUT", "/v1/kv/big", b"x" * (512 * 1024)))[2] is True
