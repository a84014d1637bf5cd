"""Keep-alive HTTP/1.1 load for the benchmarks that compare copies of a real topology.

Why shared: ``bench_observe``, ``bench_resilience`` and ``bench_debug_trace`` each start
several copies of the same two-gateway topology and drive them with the same client; only
what they configure and check differs.  A copy is one entry point (host, port) and the PIDs
whose CPU is counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import h11
import trio

from bench.procs import BenchError, Fleet


@dataclass
class Copy:
    name: str
    a_host: str
    http_port: int
    pids: list[int]
    #: More request fields, and a response field that must be present exactly when they are.
    extra_headers: Sequence[tuple[str, str]] = ()
    expect_field: bytes | None = None


async def _client(copy: Copy, authority: str, count: int, ok: list[int]) -> None:
    stream = await trio.open_tcp_stream(copy.a_host, copy.http_port)
    conn = h11.Connection(h11.CLIENT)
    headers = [("host", authority), *copy.extra_headers]
    try:
        for _ in range(count):
            request = h11.Request(method="GET", target="/", headers=headers)
            await stream.send_all(conn.send(request) + conn.send(h11.EndOfMessage()))
            status, seen = 0, False
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    data = await stream.receive_some(65536)
                    if not data:
                        raise BenchError("gateway closed the connection")
                    conn.receive_data(data)
                elif isinstance(event, h11.Response):
                    status = event.status_code
                    seen = copy.expect_field is not None and any(
                        n == copy.expect_field for n, _ in event.headers
                    )
                elif isinstance(event, h11.EndOfMessage):
                    break
            if status != 200 or seen != bool(copy.extra_headers and copy.expect_field):
                raise BenchError(f"{copy.name}: status {status}, {copy.expect_field!r} {seen}")
            ok[0] += 1
            conn.start_next_cycle()
    finally:
        await stream.aclose()


async def run_requests(copy: Copy, authority: str, total: int, connections: int) -> int:
    """``total`` GETs of ``/`` over ``connections`` keep-alive connections; how many got 200."""
    ok = [0]
    with trio.fail_after(300):
        if connections == 1:  # the readiness probe: its errors unwrapped
            await _client(copy, authority, total, ok)
            return ok[0]
        async with trio.open_nursery() as nursery:
            for i in range(connections):
                share = total // connections + (1 if i < total % connections else 0)
                nursery.start_soon(_client, copy, authority, share, ok)
    return ok[0]


async def wait_ready(
    copy: Copy, authority: str, *, fleet: Fleet | None = None, within_s: float = 60
) -> Copy:
    """``copy`` once one request through it got a 200 (its processes checked alive between
    tries when ``fleet`` is given); BenchError after ``within_s``."""
    with trio.move_on_after(within_s):
        while True:
            if fleet is not None:
                fleet.check_alive()
            try:
                if await run_requests(copy, authority, 1, 1) == 1:
                    return copy
            except (OSError, trio.BrokenResourceError, h11.ProtocolError, BenchError):
                pass
            await trio.sleep(0.2)
    raise BenchError(
        f"{copy.name}: no 200 through {copy.a_host}:{copy.http_port} within {within_s:g} s"
    )
