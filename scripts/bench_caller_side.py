#!/usr/bin/env python3
"""CPU per request of telling the caller's failures apart (``gateway.http.caller_side``).

Every exchange a cluster forwards has its caller's body and writer wrapped once
(:class:`CallerBody`, :class:`CallerWriter`).  Two tables, variants interleaved in rounds in
the same run:

* the wrappers alone: one body read and one ``send_whole`` (the usual small GET), bare
  against wrapped, with a bare trio checkpoint per call as the floor;
* the whole exchange as :meth:`LocalCluster.forward` makes it to a real HTTP/1.1 endpoint on
  loopback (pooled keep-alive connection): wrappers on against off.

Prints microseconds of process CPU per request (the endpoint runs in this process too, so the
whole-exchange figure includes it).  Usage: ``.venv/bin/python scripts/bench_caller_side.py
[requests] [rounds]``.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Awaitable, Callable

import trio

import gateway.cluster.local as local
from discovery.catalog import apply
from discovery.events import Resynced
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from discovery.watch import Watch
from gateway.cluster.local import LocalCluster
from gateway.http.caller_side import CallerBody, CallerWriter
from gateway.http.exchange import Body, CallContext, Request, Response, ResponseWriter
from gateway.http.message import Headers
from gateway.upstream.pool import UpstreamPool

SERVICE = ServiceName("api", "default")
RESPONSE = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"


class NullWriter:
    head_sent = False

    async def send_head(self, response: Response, *, end_stream: bool = False) -> None:
        await trio.lowlevel.checkpoint()

    async def send_data(self, data: bytes) -> None:
        await trio.lowlevel.checkpoint()

    async def send_end(self, trailers: Headers = ()) -> None:
        await trio.lowlevel.checkpoint()

    async def send_whole(self, response: Response, body: bytes, trailers: Headers = ()) -> None:
        await trio.lowlevel.checkpoint()


class NullBody:
    trailers: Headers = ()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        return b""


def _catalog(endpoint: Endpoint) -> Catalog:
    catalog, _ = apply(
        Catalog(), Resynced("static", (endpoint,), "1", 0.0), now=0.0, policy=Policy()
    )
    return catalog


async def _endpoint(stream: trio.SocketStream) -> None:
    buffer = b""
    try:
        while data := await stream.receive_some(65536):
            buffer += data
            while b"\r\n\r\n" in buffer:
                _, buffer = buffer.split(b"\r\n\r\n", 1)
                await stream.send_all(RESPONSE)
    except trio.BrokenResourceError:
        pass


async def _wrappers(requests: int, rounds: int) -> dict[str, float]:
    response = Response(200, ())
    totals = {"floor (2 checkpoints)": 0.0, "bare": 0.0, "wrapped": 0.0}

    async def floor() -> None:
        await trio.lowlevel.checkpoint()
        await trio.lowlevel.checkpoint()

    def exchange(body: Body, writer: ResponseWriter) -> Callable[[], Awaitable[None]]:
        async def one() -> None:
            await body.receive_some(65536)
            await writer.send_whole(response, b"ok")

        return one

    variants = {
        "floor (2 checkpoints)": floor,
        "bare": exchange(NullBody(), NullWriter()),
        "wrapped": exchange(CallerBody(NullBody()), CallerWriter(NullWriter())),
    }
    for _ in range(rounds):
        for name, run in variants.items():
            t0 = time.process_time()
            for _ in range(requests):
                await run()
            totals[name] += time.process_time() - t0
    return {k: v / (requests * rounds) * 1e6 for k, v in totals.items()}


async def _whole(requests: int, rounds: int) -> dict[str, float]:
    request = Request(b"GET", b"http", b"api.default.isthmus", b"/", ())
    totals = {"wrappers off": 0.0, "wrappers on": 0.0}
    on = (local.CallerWriter, local.caller_body)
    off = (lambda w: w, lambda b: b)
    async with trio.open_nursery() as nursery:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        nursery.start_soon(trio.serve_listeners, _endpoint, listeners)
        port = listeners[0].socket.getsockname()[1]
        pool = UpstreamPool()
        await nursery.start(pool.serve)
        cluster = LocalCluster(
            local_site="here",
            catalog=Watch(_catalog(Endpoint(SERVICE, "127.0.0.1", port))),
            pool=pool,
        )
        for _ in range(rounds):
            for name, (writer_of, body_of) in (("wrappers off", off), ("wrappers on", on)):
                local.CallerWriter, local.caller_body = writer_of, body_of  # type: ignore[assignment]
                t0 = time.process_time()
                for _ in range(requests):
                    ctx = CallContext("here", None, trio.current_time() + 10)
                    await cluster.forward(request, NullBody(), NullWriter(), ctx, service=SERVICE)
                totals[name] += time.process_time() - t0
        local.CallerWriter, local.caller_body = on  # type: ignore[assignment]
        nursery.cancel_scope.cancel()
    return {k: v / (requests * rounds) * 1e6 for k, v in totals.items()}


async def main() -> None:
    requests = int(sys.argv[1]) if len(sys.argv) > 1 else 20000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    print(f"{requests} requests x {rounds} rounds, µs of process CPU per request")
    for name, us in (await _wrappers(requests, rounds)).items():
        print(f"  wrappers alone   {name:22s} {us:8.2f}")
    whole = await _whole(max(1, requests // 10), rounds)
    for name, us in whole.items():
        print(f"  whole exchange   {name:22s} {us:8.2f}")
    off, on = whole["wrappers off"], whole["wrappers on"]
    print(f"  ratio on/off: {on / off:.3f} ({on - off:+.2f} µs per request)")


if __name__ == "__main__":
    trio.run(main)
