"""A reload drains the caller listeners it removes, on a real ``isthmus run`` gateway.

A request held at a slow endpoint on a listener and on a service port that a reload removes
is answered (200, ``connection: close``) once the endpoint answers -- after the reload has
answered, so the reload never waits for the requests in flight -- while a new connection to
either port is refused right after the reload.  The same with ``workers = 2``: the workers
apply the reload through the same reloader.  Without the drain, the reload cancels the
listener's task and cuts both requests.

``drain_grace_s`` applies live: a shutdown after a reload that shortened it cuts a request
still in flight after the new grace (it waited for the grace the gateway started with).
"""

from __future__ import annotations

import json
import signal
import socket
import urllib.request
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from tests.e2e.clients import Reply, h1_request
from tests.e2e.harness import Overlay, make_topology, open_overlay, with_site
from tests.gateway.listener.held_endpoint import HeldEndpoint

HTTP_PORT, EXTRA_PORT, SERVICE_PORT = 15080, 15090, 16090
SERVICE = "held"
AUTHORITY = f"{SERVICE}.default.isthmus"
WAIT_S = 30.0  # hang guard for each state change
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _patch(address: str, port: int) -> Any:
    def patch(_site: str, text: str) -> str:
        endpoint = (
            f'[[sources.endpoints]]\nservice = "{SERVICE}"\nnamespace = "default"\n'
            f'address = "{address}"\nport = {port}\nprotocol = "http1"\n\n[[exports]]'
        )
        assert text.count("[[exports]]") == 1
        return text.replace("[[exports]]", endpoint) + _removable(address)

    return patch


def _removable(address: str) -> str:
    """The listener and the service port the reload removes."""
    return (
        f'\n[[listeners]]\nname = "http-extra"\nkind = "http"\naddress = "{address}"\n'
        f"port = {EXTRA_PORT}\n"
        f'\n[[service_ports]]\nname = "held-port"\naddress = "{address}"\n'
        f'port = {SERVICE_PORT}\ntarget = "{AUTHORITY}"\nprotocol = "http"\n'
    )


def _post(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=b"", method="POST")
    with _OPENER.open(request, timeout=WAIT_S) as response:
        return response.status, json.loads(response.read())


def _accepts(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except ConnectionRefusedError:
        return False


async def _until(predicate: Any, what: str) -> None:
    try:
        with trio.fail_after(WAIT_S):
            while True:  # polled: a gateway process has no event to wait on
                if await predicate():
                    return
                await trio.sleep(0.05)
    except trio.TooSlowError:
        raise AssertionError(f"not within {WAIT_S} s: {what}") from None


@pytest.mark.parametrize("workers", [0, 2])
async def test_a_reload_drains_the_listeners_it_removes(tmp_path: Path, workers: int) -> None:
    topology = with_site(make_topology(["solo"]), "solo", workers=workers)
    address = str(topology.sites[0].address)
    endpoint = HeldEndpoint()
    async with trio.open_nursery() as servers:
        listeners = await servers.start(partial(trio.serve_tcp, endpoint.handler, 0, host=address))
        port = listeners[0].socket.getsockname()[1]
        async with open_overlay(tmp_path, topology, patch=_patch(address, port)) as ov:
            await _until_every_worker_serves(ov, workers)
            replies: dict[int, Reply] = {}

            async def held(on_port: int) -> None:
                replies[on_port] = await h1_request(
                    address, on_port, authority=AUTHORITY, path="/slow", request_timeout_s=WAIT_S
                )

            async with trio.open_nursery() as callers:
                for on_port in (EXTRA_PORT, SERVICE_PORT):
                    callers.start_soon(held, on_port)

                async def both_held() -> bool:
                    return endpoint.held == 2

                await _until(both_held, "both requests at the endpoint")
                config = ov.built["solo"].config_path
                text = config.read_text("utf-8")
                assert text.count(_removable(address)) == 1
                config.write_text(text.replace(_removable(address), ""), "utf-8")
                status, outcome = await trio.to_thread.run_sync(
                    _post, ov.url("solo") + "/config/reload"
                )
                assert status == 200 and outcome["result"] == "applied", outcome
                assert outcome["changes"] == ["listeners"], outcome
                # The reload answered while both requests are still held at the endpoint.
                assert not replies and not endpoint.release.is_set()
                for gone in (EXTRA_PORT, SERVICE_PORT):
                    if workers:  # each worker applies the reload a moment after the supervisor
                        await _until(_refusing(address, gone), f"port {gone} refused")
                    else:  # one process: closed before the reload answered
                        assert not await trio.to_thread.run_sync(_accepts, address, gone)
                assert not replies
                endpoint.release.set()
            for on_port in (EXTRA_PORT, SERVICE_PORT):
                reply = replies[on_port]
                assert reply.status == 200, (on_port, reply.status, reply.body[:200])
                assert reply.body == b"done /slow"
                assert reply.headers.get("connection", "").lower() == "close", reply.headers
            # The listener the reload kept serves as before.
            reply = await h1_request(address, HTTP_PORT, authority=AUTHORITY, path="/fast")
            assert reply.status == 200 and reply.body == b"done /fast"
            assert reply.headers.get("connection", "").lower() != "close"
            assert "connection(s) draining" in ov.log("solo")
        servers.cancel_scope.cancel()


def _refusing(address: str, port: int) -> Any:
    async def refused() -> bool:
        return not await trio.to_thread.run_sync(_accepts, address, port)

    return refused


async def _until_every_worker_serves(ov: Overlay, workers: int) -> None:
    if workers:

        def serving(doc: Any) -> bool:
            rows = doc.get("workers", []) if isinstance(doc, dict) else []
            return len(rows) == workers and all(r.get("serving") for r in rows)

        await ov.wait("solo", "/workers", serving, within_s=WAIT_S)
    for on_port in (EXTRA_PORT, SERVICE_PORT):
        assert await trio.to_thread.run_sync(_accepts, str(ov.built["solo"].site.address), on_port)


@pytest.mark.parametrize("workers", [0, 2])
async def test_shutdown_uses_the_grace_a_reload_set(tmp_path: Path, workers: int) -> None:
    """``drain_grace_s`` applies live: a reload from 600 s to 0.5 s makes the next SIGTERM
    cut a request that is still in flight after 0.5 s, instead of waiting 600 s for it."""
    topology = with_site(make_topology(["solo"]), "solo", workers=workers)
    address = str(topology.sites[0].address)
    endpoint = HeldEndpoint()

    def patch(site: str, text: str) -> str:
        limits = "\n[limits]\ndrain_grace_s = 600\nroute_timeout_s = 600\n"  # never a 504
        return _patch(address, port)(site, text) + limits

    async with trio.open_nursery() as servers:
        listeners = await servers.start(partial(trio.serve_tcp, endpoint.handler, 0, host=address))
        port = listeners[0].socket.getsockname()[1]
        async with open_overlay(tmp_path, topology, patch=patch) as ov:
            await _until_every_worker_serves(ov, workers)
            config = ov.built["solo"].config_path
            text = config.read_text("utf-8")
            config.write_text(text.replace("drain_grace_s = 600", "drain_grace_s = 0.5"), "utf-8")
            status, outcome = await trio.to_thread.run_sync(
                _post, ov.url("solo") + "/config/reload"
            )
            assert status == 200 and outcome["changes"] == ["limits"], outcome
            cut: list[BaseException] = []
            answered: list[Reply] = []

            async def held() -> None:
                try:
                    answered.append(
                        await h1_request(
                            address,
                            HTTP_PORT,
                            authority=AUTHORITY,
                            path="/slow",
                            request_timeout_s=WAIT_S,
                        )
                    )
                except OSError as exc:  # (http.client's RemoteDisconnected is one)
                    cut.append(exc)

            async with trio.open_nursery() as callers:
                callers.start_soon(held)

                async def is_held() -> bool:
                    return endpoint.held == 1

                await _until(is_held, "the request at the endpoint")
                if workers:  # the workers apply the reload a moment after the supervisor
                    await _until(_logged(ov, "limits", workers + 1), "every worker reloaded")
                supervisor = ov.children["solo"].process
                supervisor.send_signal(signal.SIGTERM)
                with trio.fail_after(WAIT_S):  # hang guard: 60 times the reloaded grace
                    assert await supervisor.wait() == 0
                assert not endpoint.release.is_set()  # still held when the gateway ended
            assert len(cut) == 1 and not answered, (cut, answered)
            assert "drain grace 0.5 s over: 1 caller connections cut" in ov.log("solo")
        endpoint.release.set()
        servers.cancel_scope.cancel()


def _logged(ov: Overlay, changed: str, processes: int) -> Any:
    """True once ``processes`` processes of the site logged a reload that changed ``changed``."""

    async def logged() -> bool:
        lines = [x for x in ov.log("solo").splitlines() if "config reloaded" in x]
        return sum(f"changed: {changed}" in x for x in lines) >= processes

    return logged
