"""The Consul source against the Consul-API test server, over real sockets on 127.0.0.1.

These tests need real time (the server and the source talk over real sockets), so most use
no autojump_clock; every wait is bounded with trio.fail_after.  No test asserts how fast the
source reacts -- CI shares two cores with other work, and a correct source that is merely slow
must pass -- only what it does, in which order, before a hang guard.  The reaction times are
measured by ``scripts/bench_consul.py``.
"""

from __future__ import annotations

import functools
import logging
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
import trustme

from discovery.events import Added, Event, Removed, Resynced, SourceFresh, SourceStale, Updated
from discovery.model import Endpoint, EndpointKey
from discovery.sources import consul_decode
from discovery.sources.config import ConsulSourceConfig
from discovery.sources.consul import serve_consul_source
from discovery.sources.consul_parse import ConsulAclDenied, ConsulConfigError
from tests.consul_api.server import open_consul_api_server


@pytest.fixture(autouse=True, params=sorted(consul_decode.DECODERS))
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs with each JSON decoder the source can use (orjson when installed,
    and the standard library's, which stays for platforms without orjson)."""
    name: str = request.param
    monkeypatch.setattr(consul_decode, "DEFAULT_DECODER", name)
    return name


ROOT = Path(__file__).resolve().parents[3]
# Hang guard for anything that should take milliseconds: at least 5x every timeout and backoff
# configured here, yet well below the default ``wait_s`` (30 s), so that a change seen within it
# was answered by a parked blocking query, not by one that ran out its wait.
BOUND = 10.0


def make_config(url: str, **kwargs: Any) -> ConsulSourceConfig:
    base = ConsulSourceConfig(
        kind="consul",
        name="consul",
        address=url,
        wait_s=30.0,
        backoff_base_s=0.05,
        backoff_cap_s=0.2,
    )
    return replace(base, **kwargs)


ENDPOINT_EVENTS = (Resynced, Added, Updated, Removed)


class Events:
    """The source's channel, with helpers that wait (bounded) for a matching event.

    The source announces its full set once (Resynced), then only what changed (Added /
    Updated / Removed); :meth:`resynced` folds those into the set the catalog would hold.
    """

    def __init__(self, recv: trio.MemoryReceiveChannel[Event]) -> None:
        self.recv = recv
        self.seen: list[Event] = []
        self.held: dict[EndpointKey, Endpoint] = {}

    async def next(self, predicate: Callable[[Event], bool], limit: float = BOUND) -> Event:
        with trio.fail_after(limit):
            while True:
                event = await self.recv.receive()
                self.fold(event)
                if predicate(event):
                    return event

    def fold(self, event: Event) -> None:
        self.seen.append(event)
        if isinstance(event, Resynced):
            self.held = {e.key: e for e in event.endpoints}
        elif isinstance(event, Added | Updated):
            self.held[event.endpoint.key] = event.endpoint
        elif isinstance(event, Removed):
            self.held.pop(event.key, None)

    async def resynced(
        self, predicate: Callable[[Resynced], bool] = lambda e: True, limit: float = BOUND
    ) -> Resynced:
        """The announced set (as one Resynced) once, after an endpoint event, it matches."""
        with trio.fail_after(limit):
            while True:
                event = await self.next(lambda e: True)
                if isinstance(event, ENDPOINT_EVENTS):
                    held = tuple(sorted(self.held.values(), key=lambda e: e.key))
                    folded = Resynced(event.source, held, event.version, event.at)
                    if predicate(folded):
                        return folded

    async def quiet(self, seconds: float) -> list[Event]:
        """Everything emitted during ``seconds`` of real time."""
        got: list[Event] = []
        with trio.move_on_after(seconds):
            while True:
                got.append(await self.recv.receive())
        for event in got:
            self.fold(event)
        return got


@asynccontextmanager
async def running(config: ConsulSourceConfig) -> AsyncIterator[Events]:
    send, recv = trio.open_memory_channel[Event](64)
    async with trio.open_nursery() as nursery:
        await nursery.start(serve_consul_source, config, send)
        yield Events(recv)
        nursery.cancel_scope.cancel()


async def parked(srv: Any, count: int) -> None:
    """Wait (bounded) until ``count`` blocking queries are parked in the server."""
    with trio.fail_after(BOUND):
        while srv.parked < count:  # noqa: ASYNC110 -- a counter, nothing to wait on
            await trio.sleep(0.01)


def ports(event: Resynced, service: str | None = None) -> set[int]:
    return {e.port for e in event.endpoints if service is None or e.service.name == service}


async def test_services_appear_with_their_attributes() -> None:
    async with open_consul_api_server() as srv:
        srv.register_service("web", 8080, meta={"isthmus-protocol": "http2", "team": "a"})
        srv.register_service("web", 8081, node="node-2", address="127.0.0.2", status="critical")
        srv.register_service("api", 9090, service_address="127.0.0.9")
        async with running(make_config(srv.url, target_namespace="shop")) as events:
            first = await events.resynced()
    by_port = {e.port: e for e in first.endpoints}
    assert set(by_port) == {8080, 8081, 9090}  # the "consul" service itself is not listed
    web = by_port[8080]
    assert (web.service.name, web.service.namespace) == ("web", "shop")
    assert (web.address, web.protocol, web.healthy, web.locality) == (
        "127.0.0.1",
        "http2",
        True,
        "dc1",
    )
    assert ("team", "a") in web.metadata and ("consul-node", "node-1") in web.metadata
    assert by_port[8081].healthy is False and by_port[8081].address == "127.0.0.2"
    assert by_port[9090].address == "127.0.0.9"  # Service.Address wins over Node.Address
    assert int(first.version) >= 4


async def test_blocking_query_reacts_to_a_change_without_polling() -> None:
    async with open_consul_api_server() as srv:
        srv.register_service("web", 8080)
        async with running(make_config(srv.url, wait_s=30.0)) as events:
            await events.resynced()
            await parked(srv, 2)  # the catalog watch and the "web" watch
            before = dict(srv.requests)
            assert await events.quiet(1.0) == []
            # One second of quiet: the blocking queries are parked, no new request was made.
            assert srv.requests == before and srv.parked == 2
            # Seen within BOUND, a third of wait_s: the parked query answered the change.
            srv.register_service("web", 8082)
            added = await events.resynced(lambda e: 8082 in ports(e))
            srv.deregister({"Node": "node-1", "ServiceID": "web-8080"})
            removed = await events.resynced(lambda e: 8080 not in ports(e))
    assert ports(added) == {8080, 8082} and ports(removed) == {8082}
    assert int(removed.version) > int(added.version)


async def test_new_and_removed_services_follow_the_catalog() -> None:
    async with open_consul_api_server() as srv:
        srv.register_service("web", 8080)
        async with running(make_config(srv.url)) as events:
            await events.resynced()
            srv.register_service("api", 9090)
            event = await events.resynced(lambda e: 9090 in ports(e))
            assert {e.service.name for e in event.endpoints} == {"web", "api"}
            srv.deregister({"Node": "node-1", "ServiceID": "api-9090"})
            event = await events.resynced(lambda e: 9090 not in ports(e))
            assert ports(event) == {8080}


async def test_health_changes_are_reported() -> None:
    async with open_consul_api_server() as srv:
        srv.register_service("web", 8080)
        async with running(make_config(srv.url)) as events:
            assert (await events.resynced()).endpoints[0].healthy
            srv.set_check("node-1", "service:web-8080", "critical")
            event = await events.resynced(lambda e: not e.endpoints[0].healthy)
            assert ports(event) == {8080}  # still listed, not routable


async def test_tag_and_node_meta_filters() -> None:
    async with open_consul_api_server() as srv:
        srv.register_service("web", 8080, tags=("prod",), node_meta={"rack": "r1"})
        srv.register_service("web", 8081, tags=("dev",), node="n2", node_meta={"rack": "r1"})
        srv.register_service("web", 8082, tags=("prod",), node="n3", node_meta={"rack": "r2"})
        srv.register_service("db", 5432, tags=("dev",), node="n3")
        async with running(make_config(srv.url, tags=("prod",))) as events:
            assert ports(await events.resynced()) == {8080, 8082}
        async with running(make_config(srv.url, node_meta=("rack:r1",))) as events:
            assert ports(await events.resynced()) == {8080, 8081}
        cfg = make_config(srv.url, tags=("prod",), node_meta=("rack:r1",), services=("web",))
        async with running(cfg) as events:
            assert ports(await events.resynced()) == {8080}


async def test_acl_token_accepted_and_wrong_token_is_a_typed_error(tmp_path: Path) -> None:
    async with open_consul_api_server(acl_token="s3cret") as srv:
        srv.register_service("web", 8080)
        async with running(make_config(srv.url, token="s3cret")) as events:
            assert ports(await events.resynced()) == {8080}
        token_file = tmp_path / "token"
        token_file.write_text("s3cret\n")
        async with running(make_config(srv.url, token_file=token_file)) as events:
            assert ports(await events.resynced()) == {8080}
        async with running(make_config(srv.url, token="wrong")) as events:
            stale = await events.next(lambda e: isinstance(e, SourceStale))
            assert isinstance(stale, SourceStale)
            assert "ConsulAclDenied" in stale.reason and "ACL not found" in stale.reason
            assert not any(isinstance(e, ENDPOINT_EVENTS) for e in await events.quiet(0.3))
        # Faithful to Consul: the anonymous token sees filtered (empty) reads, not a 403.
        async with running(make_config(srv.url)) as events:
            assert (await events.resynced()).endpoints == ()


async def test_500_keeps_last_good_view_marked_stale_then_reconverges() -> None:
    async with open_consul_api_server() as srv:
        srv.register_service("web", 8080)
        async with running(make_config(srv.url)) as events:
            await events.resynced()
            await parked(srv, 2)  # steady state: both blocking queries parked
            srv.fail_with_500(True)
            stale = await events.next(lambda e: isinstance(e, SourceStale))
            assert isinstance(stale, SourceStale) and "500" in stale.reason
            during = await events.quiet(0.5)  # retries keep failing; nothing is dropped
            assert not any(isinstance(e, ENDPOINT_EVENTS) for e in during)
            srv.register_service("web", 8081)  # a change while Consul answers 500
            srv.fail_with_500(False)
            back = await events.resynced(lambda e: ports(e) == {8080, 8081})
            # Endpoint events do not confirm the source: SourceFresh does, once every query
            # (the services list too) answers again.
            await events.next(lambda e: isinstance(e, SourceFresh))
            srv.fail_with_500(True)
            await events.next(lambda e: isinstance(e, SourceStale))
            srv.fail_with_500(False)  # unchanged set -> SourceFresh, no Resynced
            fresh = await events.next(lambda e: isinstance(e, (SourceFresh, *ENDPOINT_EVENTS)))
    assert ports(back) == {8080, 8081}
    assert isinstance(fresh, SourceFresh)


async def test_agent_going_away_and_coming_back() -> None:
    async with open_consul_api_server() as srv:
        srv.register_service("web", 8080)
        async with running(make_config(srv.url)) as events:
            await events.resynced()
            await parked(srv, 2)  # steady state: both blocking queries parked
            await srv.go_away()
            stale = await events.next(lambda e: isinstance(e, SourceStale))
            assert isinstance(stale, SourceStale) and "ConsulUnavailable" in stale.reason
            assert not any(isinstance(e, ENDPOINT_EVENTS) for e in await events.quiet(0.5))
            srv.register_service("api", 9090)
            await srv.come_back()
            back = await events.resynced(lambda e: 9090 in ports(e))
    assert ports(back) == {8080, 9090}


async def test_index_going_backwards_resets_the_blocking_query() -> None:
    async with open_consul_api_server() as srv:
        for port in range(8080, 8090):
            srv.register_service("web", port)  # drive the index up to 12
        async with running(make_config(srv.url, wait_s=1.0)) as events:
            await events.resynced()
            # A snapshot restore: indexes drop below what the source holds.  Consul aborts
            # parked queries; one arriving later with the old index blocks until ``wait``.
            srv.restore_index(3)
            mark = len(srv.reads)
            srv.register_service("web", 9999)  # index 4, far below the source's 12
            event = await events.resynced(lambda e: 9999 in ports(e))
            await events.quiet(0.3)
            web = [index for path, index in list(srv.reads)[mark:] if path.endswith("/web")]
    assert int(event.version) < 12
    # HashiCorp: "reset the index if it goes backwards" -- a non-blocking re-read (index 0)
    # follows, and the source never parks on the stale index 12 again.
    assert 0 in web and all(index < 12 for index in web[web.index(0) :]), web


@pytest.mark.parametrize(
    "body, fragment",
    [
        ("{not json", "ConsulMalformedResponse"),
        ("[" * 100_000 + "]" * 100_000, "undecodable JSON: "),  # too deep for either decoder
        ('"\\ud800"', "ConsulMalformedResponse"),  # json: not an array; orjson: a lone surrogate
        ('{"Node": {}}', "expected an array"),
        (
            '[{"Node": {"Node": "n", "Address": "127.0.0.1"}, '
            '"Service": {"ID": "w", "Service": "web", "Port": "8080"}, "Checks": []}]',
            "Port: expected an integer",
        ),
        (
            '[{"Node": {"Node": "n", "Address": "127.0.0.1"}, '
            '"Service": {"ID": "w", "Service": "web", "Port": 70000}, "Checks": []}]',
            "port 70000 out of range",
        ),
        ('[{"Node": {"Node": "n", "Address": "127.0.0.1"}, "Checks": []}]', "missing field"),
    ],
)
async def test_malformed_answers_are_typed_errors_and_change_nothing(
    body: str, fragment: str
) -> None:
    async with open_consul_api_server() as srv:
        srv.register_service("web", 8080)
        async with running(make_config(srv.url)) as events:
            await events.resynced()
            before = srv.requests.get("/v1/health/service/web", 0)
            srv.inject("/v1/health/service/web", body)
            stale = await events.next(lambda e: isinstance(e, SourceStale))
            assert isinstance(stale, SourceStale) and fragment in stale.reason
            # The source keeps retrying (with backoff, not in a busy loop).
            path = "/v1/health/service/web"
            mark, start = len(events.seen), trio.current_time()
            with trio.fail_after(BOUND):
                while srv.requests[path] - before < 3:
                    await events.quiet(0.05)
            await events.quiet(0.6)
            span = trio.current_time() - start
            assert not any(isinstance(e, ENDPOINT_EVENTS) for e in events.seen[mark:])
            # Backoff capped at 0.2 s with full jitter: ~10 retries a second on average; a busy
            # loop would make thousands.  The bound scales with the time that really passed,
            # so a slow machine (fewer retries) cannot fail it.
            assert srv.requests[path] - before <= 5 + 50 * span
            srv.clear_injections()
            fresh = await events.next(lambda e: isinstance(e, (SourceFresh, *ENDPOINT_EVENTS)))
            assert isinstance(fresh, SourceFresh)


async def test_a_404_names_the_status_and_the_request() -> None:
    """A 404 (a proxy in front of Consul, a wrong path) reads as what it is, not as py-consul's
    "Missing index header: <...Headers object at 0x...>"."""
    async with open_consul_api_server() as srv:
        srv.register_service("web", 8080)
        async with running(make_config(srv.url)) as events:
            await events.resynced()
            srv.inject("/v1/health/service/web", "404 page not found", status=404)
            stale = await events.next(lambda e: isinstance(e, SourceStale))
            assert isinstance(stale, SourceStale)
            assert "ConsulHttpError" in stale.reason, stale.reason
            assert "HTTP 404 from GET /v1/health/service/web: 404 page not found" in stale.reason
            assert "object at 0x" not in stale.reason and "index header" not in stale.reason
            srv.clear_injections()
            fresh = await events.next(lambda e: isinstance(e, (SourceFresh, *ENDPOINT_EVENTS)))
            assert isinstance(fresh, SourceFresh)


async def test_oversize_body_is_refused() -> None:
    async with open_consul_api_server() as srv:
        srv.register_service("web", 8080)
        async with running(make_config(srv.url, max_body_bytes=4096)) as events:
            await events.resynced()
            srv.inject("/v1/health/service/web", "[" + " " * 10_000 + "]")
            stale = await events.next(lambda e: isinstance(e, SourceStale))
            assert isinstance(stale, SourceStale) and "ConsulResponseTooLarge" in stale.reason


async def test_cancellation_does_not_wait_for_a_parked_blocking_query() -> None:
    async with open_consul_api_server() as srv:
        srv.register_service("web", 8080)
        send, recv = trio.open_memory_channel[Event](64)
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_consul_source, make_config(srv.url, wait_s=600.0), send)
            with trio.fail_after(BOUND):
                while not isinstance(await recv.receive(), Resynced):
                    pass
            await parked(srv, 2)
            start = trio.current_time()
            nursery.cancel_scope.cancel()
        elapsed = trio.current_time() - start
    # Hang guard, not a speed claim: had cancelling waited for the parked queries, it would
    # have taken wait_s (600 s), sixty times this bound.
    assert elapsed < BOUND


async def test_unreachable_at_start_is_stale_not_an_exception() -> None:
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()  # nothing listens there now
    async with running(make_config(f"http://127.0.0.1:{port}")) as events:
        stale = await events.next(lambda e: isinstance(e, SourceStale))
    assert isinstance(stale, SourceStale) and "cannot connect" in stale.reason


async def test_bad_config_fails_before_started() -> None:
    send, _ = trio.open_memory_channel[Event](1)
    for bad in (
        make_config("ftp://127.0.0.1:8500"),
        make_config("http://127.0.0.1:8500", node_meta=("no-colon",)),
    ):
        with pytest.raises(ConsulConfigError):
            await serve_consul_source(bad, send)


def _tls_server_context(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED  # Consul's verify_incoming
    return context


async def test_tls_to_the_agent_with_client_certificate(tmp_path: Path) -> None:
    ca = trustme.CA()
    ca_file, cert_file = tmp_path / "ca.pem", tmp_path / "client.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    ca.issue_cert("isthmus-client").private_key_and_cert_chain_pem.write_to_path(str(cert_file))
    async with open_consul_api_server(ssl_context=_tls_server_context(ca)) as srv:
        srv.register_service("web", 8443)
        assert srv.url.startswith("https://")
        cfg = make_config(srv.url, ca_file=ca_file, cert_file=cert_file)
        async with running(cfg) as events:
            assert ports(await events.resynced()) == {8443}
        # Without the client certificate the agent refuses the handshake: stale, typed.
        async with running(make_config(srv.url, ca_file=ca_file)) as events:
            stale = await events.next(lambda e: isinstance(e, SourceStale))
            assert isinstance(stale, SourceStale) and "ConsulUnavailable" in stale.reason


async def test_server_blocking_semantics_via_py_consul(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The test server itself: index, wait and jitter bound, as HashiCorp documents.

    On the autojump clock, so the wait is measured exactly: the request and answer cross
    loopback sockets at once, and the only timer running is the server's wait."""
    import consul as consul_api

    from discovery.sources.consul import TrioConsul
    from discovery.sources.consul_http import TrioHTTPClient

    async with open_consul_api_server() as srv:
        client = TrioHTTPClient("127.0.0.1", srv.port, "http", ssl_context=None)
        consul = TrioConsul(client, token=None, dc=None)
        ttl = consul_api.Check.ttl("10s")
        await consul.agent.service.register("web", service_id="web1", port=80, check=ttl)
        index, data = await consul.catalog.services()
        assert data == {"consul": [], "web": []}
        start = trio.current_time()
        same, _ = await consul.catalog.services(index=index, wait="500ms")
        waited = trio.current_time() - start
        assert same == index and 0.5 <= waited <= 0.5 + 0.5 / 16
        _, nodes = await consul.health.service("web", passing=True)
        assert nodes == []  # agent checks start critical, as in Consul
        await consul.agent.service.deregister("web1")
        _, data = await consul.catalog.services()
        assert data == {"consul": []}


async def test_server_runs_as_a_subprocess() -> None:
    """``python -m tests.consul_api.server`` as the end-to-end tests start it, with ACLs."""
    from discovery.sources.consul import TrioConsul
    from discovery.sources.consul_http import TrioHTTPClient

    command = [sys.executable, "-m", "tests.consul_api.server", "--port", "0"]
    command += ["--acl-token", "tok"]
    async with trio.open_nursery() as nursery:
        start = functools.partial(
            trio.run_process, command, stdout=subprocess.PIPE, check=False, cwd=ROOT
        )
        process = await nursery.start(start)
        with trio.fail_after(10):
            line = b""
            while not line.endswith(b"\n"):
                line += await process.stdout.receive_some(1)
        url = line.decode().split()[-1]
        port = int(url.rsplit(":", 1)[1])
        consul = TrioConsul(
            TrioHTTPClient("127.0.0.1", port, "http", ssl_context=None), token=None, dc=None
        )
        # anonymous writes are denied: a typed error naming the status and the request
        with pytest.raises(ConsulAclDenied, match="HTTP 403 from PUT /v1/agent/service/register"):
            await consul.agent.service.register("web", port=8080)
        consul.token = "tok"
        await consul.agent.service.register("web", port=8080)
        async with running(make_config(url, token="tok")) as events:
            assert ports(await events.resynced()) == {8080}
        process.terminate()


async def test_retries_back_off_with_jitter_and_stale_is_said_once(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Agent down for 10 virtual minutes: bounded retries, one SourceStale, a quiet log.

    A refused loopback connect fails inside the connect call (no real-time wait), so the
    only waits are the source's backoff sleeps and the autojump clock can skip them.
    """
    caplog.set_level(logging.DEBUG, logger="discovery.sources.consul")
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    await listener.aclose()
    config = make_config(f"http://127.0.0.1:{port}", backoff_base_s=0.5, backoff_cap_s=30.0)
    async with running(config) as events:
        got = await events.quiet(600.0)
    attempts = [r for r in caplog.records if "ConsulUnavailable" in r.getMessage()]
    warnings = [r for r in attempts if r.levelno == logging.WARNING]
    # Full jitter with a 30 s cap: ~15 s on average once ramped up -> roughly 40 in 600 s;
    # a busy loop would make thousands, a stuck retry loop none after the first.
    assert 15 <= len(attempts) <= 200, len(attempts)
    assert len(warnings) == 1  # the same failure repeated is logged at debug level
    assert [type(e) for e in got] == [SourceStale]


async def test_many_services_with_few_connections() -> None:
    """150 services, 20 connections: first reads are not starved by parked queries, and a
    change is still seen although watchers take turns.

    Hang guards of 5 x ``wait_s``: were first reads queued behind parked queries, the 150
    would take 150 / 20 rounds of ``wait_s``; were a watcher starved, never."""
    wait_s = 3.0
    async with open_consul_api_server() as srv:
        for i in range(150):
            srv.register_service(f"svc-{i}", 10000 + i)
        config = make_config(srv.url, max_connections=20, wait_s=wait_s)
        async with running(config) as events:
            event = await events.resynced(limit=5 * wait_s)
            assert len(event.endpoints) == 150
            # Every connection for blocking queries (all but the tenth kept for quick reads)
            # holds a parked query: the other watchers wait their turn.
            await parked(srv, 20 - 20 // 10)
            srv.register_service("svc-149", 20000, node="node-9")  # touches svc-149 only
            changed = await events.resynced(lambda e: 20000 in ports(e), limit=5 * wait_s)
    assert len(changed.endpoints) == 151


async def test_datacenter_namespace_and_partition_parameters() -> None:
    async with open_consul_api_server(datacenter="east") as srv:
        srv.register_service("web", 8080)
        srv.register(
            {
                "Node": "node-1",
                "Address": "127.0.0.1",
                "Service": {"Service": "web", "ID": "web-t", "Port": 8181, "Namespace": "team-a"},
            }
        )
        srv.register(
            {
                "Node": "node-1",
                "Address": "127.0.0.1",
                "Service": {"Service": "web", "ID": "web-p", "Port": 8282, "Partition": "p1"},
            }
        )
        async with running(make_config(srv.url, datacenter="east")) as events:
            assert ports(await events.resynced()) == {8080}
        async with running(make_config(srv.url, namespace="team-a")) as events:
            assert ports(await events.resynced()) == {8181}
        async with running(make_config(srv.url, partition="p1")) as events:
            assert ports(await events.resynced()) == {8282}
        async with running(make_config(srv.url, datacenter="west")) as events:
            stale = await events.next(lambda e: isinstance(e, SourceStale))
            assert isinstance(stale, SourceStale) and "No path to datacenter" in stale.reason


async def test_unchanged_instances_are_not_parsed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """An instance whose ModifyIndexes did not move is reused, not parsed: at 100k endpoints,
    parsing every instance of every answer (a blocking query that ran out its wait, or one
    changed instance among hundreds) was most of the source's CPU and event-loop time."""
    import discovery.sources.consul_parse as parse_module

    parsed: list[str] = []
    real = parse_module._instance

    def counting(entry: Any, path: str, **kwargs: Any) -> Any:
        parsed.append(entry["Service"]["ID"])
        return real(entry, path, **kwargs)

    monkeypatch.setattr(parse_module, "_instance", counting)
    async with open_consul_api_server() as srv:
        for port in (8080, 8081, 8082):
            srv.register_service("web", port)
        async with running(make_config(srv.url, wait_s=1.0)) as events:
            first = await events.resynced()
            path = "/v1/health/service/web"
            asked = srv.requests.get(path, 0)
            with trio.fail_after(BOUND):
                while srv.requests.get(path, 0) < asked + 2:  # noqa: ASYNC110 -- a counter
                    await trio.sleep(0.05)  # two queries ran out their 1 s wait, unchanged
            assert sorted(parsed) == ["web-8080", "web-8081", "web-8082"]
            srv.register_service("web", 8081, meta={"team": "b"})  # one instance changes
            changed = await events.resynced(
                lambda e: any(("team", "b") in x.metadata for x in e.endpoints)
            )
            srv.register_service("web", 8083)  # and one is added
            added = await events.resynced(lambda e: 8083 in ports(e))
    assert ports(first) == ports(changed) == {8080, 8081, 8082}
    assert ports(added) == {8080, 8081, 8082, 8083}
    assert sorted(parsed) == ["web-8080", "web-8081", "web-8081", "web-8082", "web-8083"]
