"""The Consul source decodes and parses big answers off the event loop.

Proven without timing: the JSON decoder and the parser are replaced by stubs that, before
doing the real work, block their thread until a task *on the event loop* lets them go.  Were
either called on the loop, that task could not run, the stub would give up after its hang
guard and the test fails; called from a worker thread, the loop lets it go at once.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
import trio

import discovery.sources.consul as consul_module
from discovery.events import Event, Resynced
from discovery.sources import consul_decode
from discovery.sources.config import ConsulSourceConfig
from discovery.sources.consul import serve_consul_source
from discovery.sources.consul_http import OFFLOAD_BYTES
from discovery.sources.consul_parse import parse_health_service
from tests.consul_api.server import open_consul_api_server

BOUND = 10.0
INSTANCES = 300


class Gate:
    """A call that waits (in its own thread, bounded) until the loop opens the gate."""

    def __init__(self, real: Any) -> None:
        self.real = real
        self.entered = threading.Event()
        self.opened = threading.Event()
        self.calls = 0
        self.on_loop = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        self.entered.set()
        if not self.opened.wait(BOUND / 4):
            self.on_loop += 1  # nobody on the loop could open it: we are blocking the loop
        return self.real(*args, **kwargs)

    async def open_when_entered(self) -> None:
        with trio.fail_after(BOUND):
            while not self.entered.is_set():  # noqa: ASYNC110 -- a thread's flag
                await trio.sleep(0.005)
        self.opened.set()


async def test_big_answers_are_decoded_and_parsed_while_the_loop_runs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    loads = Gate(consul_decode.DECODERS[consul_decode.DEFAULT_DECODER])
    parse = Gate(parse_health_service)

    def gated(text: str) -> Any:
        return loads(text) if len(text) >= OFFLOAD_BYTES else json.loads(text)

    monkeypatch.setitem(consul_decode.DECODERS, "gated", gated)
    monkeypatch.setattr(consul_decode, "DEFAULT_DECODER", "gated")
    monkeypatch.setattr(consul_module, "parse_health_service", parse)
    async with open_consul_api_server() as srv:
        for i in range(INSTANCES):
            srv.register_service("web", 20000 + i, meta={"team": "blue" * 20})
        config = ConsulSourceConfig(kind="consul", name="consul", address=srv.url)
        send, recv = trio.open_memory_channel[Event](64)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(loads.open_when_entered)
            nursery.start_soon(parse.open_when_entered)
            await nursery.start(serve_consul_source, config, send)
            with trio.fail_after(BOUND):
                first = await recv.receive()
            nursery.cancel_scope.cancel()
    assert isinstance(first, Resynced) and len(first.endpoints) == INSTANCES
    assert loads.calls >= 1 and parse.calls >= 1  # the big answer went through both gates
    assert loads.on_loop == 0 and parse.on_loop == 0
