"""A gateway with worker processes starts, stops and fails like one process, on real processes.

* A caller port another program holds: ``isthmus run`` exits 1 at once, naming the listener
  (as one process does), instead of its workers failing to bind over and over.
* SIGTERM: the supervisor drains its workers -- a request in flight at the endpoint is
  answered (with ``connection: close``), new connections are refused, and every process of
  the gateway exits.
* A config reload reaches every worker: a route added by ``POST /config/reload`` at the
  supervisor answers on every new connection (SO_REUSEPORT spreads them over the workers).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import trio

from tests.e2e.clients import h1_request
from tests.e2e.counting_server import Counting, serve_counting
from tests.e2e.harness import Overlay, make_topology, open_overlay, with_site
from tests.e2e.proc_owner import alive, children_of

HTTP_PORT = 15080
SERVICE = "slow"
AUTHORITY = f"{SERVICE}.default.isthmus"
WAIT_S = 30.0  # hang guard for each state change
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _with_service(text: str, address: str, port: int) -> str:
    block = (
        f'[[sources.endpoints]]\nservice = "{SERVICE}"\nnamespace = "default"\n'
        f'address = "{address}"\nport = {port}\nprotocol = "http1"\n\n[[exports]]'
    )
    assert text.count("[[exports]]") == 1
    return text.replace("[[exports]]", block)


def _serving(doc: Any) -> bool:
    return isinstance(doc, dict) and all(r.get("serving") for r in doc.get("workers", [])) and (
        len(doc.get("workers", [])) == 2
    )


async def test_a_caller_port_in_use_fails_the_start_with_its_name(tmp_path: Path) -> None:
    topology = with_site(make_topology(["solo"]), "solo", workers=2)
    address = str(topology.sites[0].address)
    holder = socket.socket()
    holder.bind((address, HTTP_PORT))  # another program's socket: no SO_REUSEPORT
    holder.listen()
    try:
        async with open_overlay(tmp_path, topology, start=[]) as ov:
            argv = [sys.executable, "-m", "gateway.cli", "run", str(ov.built["solo"].config_path)]
            done = await trio.to_thread.run_sync(
                lambda: subprocess.run(argv, capture_output=True, text=True, timeout=60)
            )
    finally:
        holder.close()
    assert done.returncode == 1, done.stderr[-2000:]
    assert f"{address}:{HTTP_PORT}" in done.stderr and "listener http" in done.stderr
    assert "worker 0 started" not in done.stderr  # failed before any worker


async def test_sigterm_drains_the_workers_and_reload_reaches_them(tmp_path: Path) -> None:
    topology = with_site(make_topology(["solo"]), "solo", workers=2)
    address = str(topology.sites[0].address)
    endpoint = Counting(200, "slow", delay_s=1.5)
    async with trio.open_nursery() as servers:
        port = await servers.start(serve_counting, address, endpoint)

        def patch(_site: str, text: str) -> str:
            return _with_service(text, address, port)

        async with open_overlay(tmp_path, topology, patch=patch) as ov:
            await ov.wait("solo", "/workers", _serving, within_s=WAIT_S)
            await _reload_reaches_every_worker(ov, address)
            supervisor = ov.children["solo"].process
            workers = children_of(supervisor.pid)
            assert len(workers) == 2, workers
            results: list[Any] = []

            async def held_request() -> None:
                results.append(
                    await h1_request(address, HTTP_PORT, authority=AUTHORITY, request_timeout_s=20)
                )

            async with trio.open_nursery() as nursery:
                nursery.start_soon(held_request)
                with trio.fail_after(WAIT_S):
                    while True:  # until the request is at the endpoint
                        if endpoint.in_flight:
                            break
                        await trio.sleep(0.02)
                supervisor.send_signal(signal.SIGTERM)
                with trio.fail_after(WAIT_S):  # new connections are refused while it drains
                    while True:
                        if not await _accepts(address):
                            break
                        await trio.sleep(0.05)
            with trio.fail_after(WAIT_S):
                assert await supervisor.wait() == 0
            reply = results[0]
            assert reply.status == 200, (reply.status, reply.body[:200])
            assert reply.headers.get("connection", "").lower() == "close"
            assert not any(alive(pid) for pid in workers)
            assert "draining" in ov.log("solo")
        servers.cancel_scope.cancel()


async def _accepts(address: str) -> bool:
    def attempt() -> bool:
        try:
            with socket.create_connection((address, HTTP_PORT), timeout=2):
                return True
        except OSError:
            return False

    return await trio.to_thread.run_sync(attempt)


async def _reload_reaches_every_worker(ov: Overlay, address: str) -> None:
    """A route that answers 418 without an upstream, added by a reload, is followed by every
    worker: 40 new connections (spread by the kernel over both workers) all get it."""
    path = ov.built["solo"].config_path
    text = path.read_text("utf-8")
    route = (
        '[[routes]]\nname = "teapot"\naddress = "teapot.default"\n'
        "[routes.direct_response]\nstatus = 418\nbody = \"short and stout\"\n\n"
    )
    path.write_text(text.replace("[[exports]]", route + "[[exports]]", 1), "utf-8")
    status, outcome = await trio.to_thread.run_sync(_post, ov.url("solo") + "/config/reload")
    assert status == 200 and outcome["result"] == "applied", outcome
    with trio.fail_after(WAIT_S):
        while True:  # each worker applies it a moment after the supervisor
            replies = [
                await h1_request(address, HTTP_PORT, authority="teapot.default.isthmus")
                for _ in range(40)
            ]
            if all(r.status == 418 for r in replies):
                break
            await trio.sleep(0.1)
    doc = await ov.get("solo", "/workers")  # both workers answered some of them
    assert all(r.get("serving") and r.get("requests", 0) > 0 for r in doc["workers"]), doc


def _post(url: str) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=b"", method="POST")
    with _OPENER.open(request, timeout=30) as response:
        return response.status, json.loads(response.read())
