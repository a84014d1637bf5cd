"""Keep-alive in the Consul HTTP client (discovery/sources/consul_http.py): real sockets.

Two servers: the Consul-API test server (``accepted`` counts its connections) for what Consul
does, and :class:`ScriptedServer`, a raw h11 server whose answer to each request a test
scripts (answer, answer with ``Connection: close``, drop the connection unanswered, stall
mid-body, answer oversize), for what a real agent or a proxy in front of it may do.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import h11
import pytest
import trio
import trio.testing
import trustme

from discovery.sources.consul import TrioConsul
from discovery.sources.consul_http import TrioHTTPClient
from discovery.sources.consul_parse import (
    ConsulResponseTooLarge,
    ConsulTimeout,
    ConsulUnavailable,
)
from discovery.sources.consul_pool import IDLE_S, IdlePool
from tests.consul_api.server import open_consul_api_server

Script = Callable[[int, int], str]  # (connection number from 1, request number on it) -> action
_BODY = b'{"consul": []}'


class ScriptedServer:
    """A raw HTTP/1.1 server on 127.0.0.1; ``script`` says what to do with each request."""

    def __init__(self, script: Script) -> None:
        self.script = script
        self.accepted = 0
        self.closed = 0  # connections that ended (either side)
        self.ended = trio.Event()  # set when one did
        self.log: list[tuple[int, str]] = []  # (connection number, method) per request
        self.port = 0

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        await trio.serve_listeners(self.handle, listeners, task_status=task_status)

    async def handle(self, stream: trio.SocketStream) -> None:
        self.accepted += 1
        number = self.accepted
        conn = h11.Connection(h11.SERVER)
        try:
            for seq in range(100):
                request = await self.read_request(conn, stream)
                if request is None:
                    return
                self.log.append((number, request.method.decode()))
                action = self.script(number, seq)
                if action == "drop":
                    return
                body = b"x" * 4096 if action == "big" else _BODY
                headers = [("Content-Type", "application/json"), ("X-Consul-Index", "7")]
                headers.append(("Content-Length", str(len(body))))
                if action == "close":
                    headers.append(("Connection", "close"))
                out = conn.send(h11.Response(status_code=200, headers=headers))
                if action == "stall":  # the head and a part of the body, then nothing
                    await stream.send_all(out + conn.send(h11.Data(data=body[:5])))
                    await trio.sleep_forever()
                out += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
                await stream.send_all(out)
                if conn.our_state is h11.MUST_CLOSE:
                    return
                conn.start_next_cycle()
        except (trio.BrokenResourceError, OSError, h11.ProtocolError):
            return
        finally:
            self.closed += 1
            self.ended.set()
            await trio.aclose_forcefully(stream)

    @staticmethod
    async def read_request(conn: h11.Connection, stream: trio.SocketStream) -> h11.Request | None:
        request: h11.Request | None = None
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Request):
                request = event
            elif isinstance(event, h11.EndOfMessage):
                return request
            elif isinstance(event, h11.ConnectionClosed):
                return None


@asynccontextmanager
async def scripted(script: Script) -> AsyncIterator[ScriptedServer]:
    server = ScriptedServer(script)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.serve)
        yield server
        nursery.cancel_scope.cancel()


def answer_all(number: int, seq: int) -> str:
    return "answer"


async def get(client: TrioHTTPClient, path: str = "/v1/catalog/services") -> int:
    code: int = await client.get(lambda response: response.code, path)
    return code


# -- reuse ------------------------------------------------------------------------------------


async def test_sequential_reads_share_one_connection() -> None:
    async with open_consul_api_server() as srv:
        srv.register_service("web", 80)
        client = TrioHTTPClient("127.0.0.1", srv.port, "http", ssl_context=None)
        consul = TrioConsul(client, token=None, dc=None)
        index, _ = await consul.catalog.services()
        for _ in range(5):
            await consul.health.service("web")
            await consul.catalog.services(index=index, wait="10ms")  # a blocking query too
        assert srv.accepted == 1
        assert len(client.pool) == 1
        await client.close()
        assert len(client.pool) == 0


async def test_close_closes_the_idle_connections() -> None:
    async with scripted(answer_all) as server:
        client = TrioHTTPClient("127.0.0.1", server.port, "http", ssl_context=None)
        assert await get(client) == 200
        assert server.closed == 0
        await client.close()
        with trio.fail_after(10):  # hang guard only: the server sees the EOF at once
            await server.ended.wait()
        assert server.closed == 1


def _tls_server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    return context


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
async def test_a_get_on_a_connection_the_server_closed_while_idle_goes_to_a_new_one(
    tls: bool, tmp_path: Path
) -> None:
    ca = trustme.CA()
    server_context = _tls_server_context(ca) if tls else None
    client_context: ssl.SSLContext | None = None
    if tls:
        client_context = ssl.create_default_context()
        ca.configure_trust(client_context)
    async with open_consul_api_server(ssl_context=server_context) as srv:
        scheme = "https" if tls else "http"
        client = TrioHTTPClient("127.0.0.1", srv.port, scheme, ssl_context=client_context)
        assert await get(client) == 200
        assert len(client.pool) == 1
        # The agent restarts: every connection it had, the idle kept one too, is closed.
        await srv.go_away()
        await srv.come_back()
        assert await get(client) == 200  # nothing raised: sent again on a new connection
        assert await get(client) == 200  # ... which is kept in turn
        assert srv.accepted == 2
        await client.close()


async def test_a_get_dropped_unanswered_on_a_kept_connection_is_sent_once_more() -> None:
    # The second request on connection 1 is read and the connection closed without a byte of
    # answer: the server closed it as the request arrived.
    async with scripted(lambda n, seq: "drop" if (n, seq) == (1, 1) else "answer") as server:
        client = TrioHTTPClient("127.0.0.1", server.port, "http", ssl_context=None)
        assert await get(client) == 200
        assert await get(client) == 200
        assert server.log == [(1, "GET"), (1, "GET"), (2, "GET")]
        await client.close()


async def test_a_fresh_connection_failing_is_never_retried() -> None:
    async with scripted(lambda n, seq: "drop") as server:
        client = TrioHTTPClient("127.0.0.1", server.port, "http", ssl_context=None)
        with pytest.raises(ConsulUnavailable):
            await get(client)
        assert server.log == [(1, "GET")]
        assert len(client.pool) == 0


async def test_a_write_never_takes_a_kept_connection_and_is_never_sent_twice() -> None:
    """By design a PUT (registration, check update, KV compare-and-set) opens a connection of
    its own: a kept one may be stale, and a write failing there could not be told apart from
    one the agent applied.  Its own connection failing is a typed error, not a retry."""
    async with scripted(lambda n, seq: "drop" if n == 2 else "answer") as server:
        client = TrioHTTPClient("127.0.0.1", server.port, "http", ssl_context=None)
        assert await get(client) == 200
        assert len(client.pool) == 1
        with pytest.raises(ConsulUnavailable):
            await client.request("PUT", "/v1/agent/check/pass/web", None, b"")
        assert server.log == [(1, "GET"), (2, "PUT")]
        assert len(client.pool) == 1  # the kept connection was not touched
        answer = await client.request("PUT", "/v1/agent/check/pass/web", None, b"")
        assert answer.code == 200
        assert server.log[-1] == (3, "PUT")
        assert len(client.pool) == 2  # a write's connection is kept for later reads
        await client.close()


# -- what is not reused -----------------------------------------------------------------------


async def test_an_answer_with_connection_close_is_not_reused() -> None:
    async with scripted(lambda n, seq: "close" if n == 1 else "answer") as server:
        client = TrioHTTPClient("127.0.0.1", server.port, "http", ssl_context=None)
        for _ in range(3):
            assert await get(client) == 200
        assert server.log == [(1, "GET"), (2, "GET"), (2, "GET")]
        await client.close()


async def test_a_request_cancelled_mid_answer_leaves_no_connection_in_the_pool(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def script(number: int, seq: int) -> str:
        return "stall" if (number, seq) == (1, 1) or number == 2 else "answer"

    async with scripted(script) as server:
        client = TrioHTTPClient("127.0.0.1", server.port, "http", ssl_context=None)
        assert await get(client) == 200
        assert len(client.pool) == 1
        with pytest.raises(ConsulTimeout):  # the request timeout cancels it mid-body
            await get(client)
        assert len(client.pool) == 0
        with trio.move_on_after(1):  # a caller's cancellation mid-answer
            await get(client)
        assert len(client.pool) == 0
        assert await get(client) == 200
        assert server.log == [(1, "GET"), (1, "GET"), (2, "GET"), (3, "GET")]
        await client.close()


async def test_an_oversize_answer_is_not_reused() -> None:
    async with scripted(lambda n, seq: "big" if n == 1 else "answer") as server:
        client = TrioHTTPClient(
            "127.0.0.1", server.port, "http", ssl_context=None, max_body_bytes=1024
        )
        with pytest.raises(ConsulResponseTooLarge):
            await get(client)
        assert len(client.pool) == 0
        assert await get(client) == 200
        assert server.log == [(1, "GET"), (2, "GET")]
        await client.close()


async def test_an_idle_connection_past_the_idle_bound_is_not_reused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_consul_api_server() as srv:
        client = TrioHTTPClient("127.0.0.1", srv.port, "http", ssl_context=None)
        assert await get(client) == 200
        await trio.sleep(IDLE_S - 1)
        assert await get(client) == 200
        assert srv.accepted == 1
        await trio.sleep(IDLE_S + 1)
        assert await get(client) == 200
        assert srv.accepted == 2
        assert len(client.pool) == 1
        await client.close()


async def test_the_pool_keeps_at_most_max_connections(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """max_connections = 1 still lets a blocking query and a quick read run at once (one
    limiter each): both connections answer, one is kept."""
    async with open_consul_api_server() as srv:
        client = TrioHTTPClient("127.0.0.1", srv.port, "http", ssl_context=None, max_connections=1)
        consul = TrioConsul(client, token=None, dc=None)
        index, _ = await consul.catalog.services()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: consul.catalog.services(index=index, wait="2s"))
            with trio.fail_after(60):
                while srv.parked == 0:  # noqa: ASYNC110 -- a counter, nothing to wait on
                    await trio.sleep(0.01)
            await consul.catalog.services()  # the blocking query holds the kept connection
        assert srv.accepted == 2
        assert len(client.pool) == 1
        await client.close()


# -- the pool's decisions (sans-IO) -----------------------------------------------------------


def test_idle_pool_is_last_in_first_out_bounded_and_ages_out() -> None:
    pool: IdlePool[str] = IdlePool(max_idle=2, idle_s=10.0)
    assert pool.take(0.0) == (None, [])
    assert pool.put("a", 0.0) == []
    assert pool.put("b", 1.0) == []
    assert pool.put("c", 2.0) == ["a"]  # over the bound: the oldest goes
    assert pool.take(3.0) == ("c", [])  # the most recently used first
    assert pool.put("c", 4.0) == []
    assert pool.put("d", 12.0) == ["b"]  # b idle since 1.0: too old by now
    assert pool.take(30.0) == (None, ["d", "c"])  # the top too old: all of them are
    assert len(pool) == 0
    pool.put("e", 0.0)
    assert pool.drain() == ["e"] and len(pool) == 0
