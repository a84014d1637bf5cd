"""Copies of a real two-gateway topology, and keep-alive HTTP/1.1 load to compare them.

Why shared: ``bench_observe``, ``bench_resilience`` and ``bench_debug_trace`` each start
several copies of the same two-gateway topology and drive them with the same client; only
what they configure and check differs.  A copy is one entry point (host, port) and the PIDs
whose CPU is counted.
"""

from __future__ import annotations

import argparse
import ipaddress
import shutil
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import h11
import trio

from bench.procs import BenchError, Fleet
from foundation.spiffe_id import TrustDomain
from gateway.demo.runner import gateway_argv, service_argv
from gateway.demo.topology import DemoService, DemoSite, Topology, build_topology

#: The service every copy serves in site ``b`` and the client asks for at ``a``.
API = "api.default.isthmus"


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


async def start_two_sites(
    fleet: Fleet,
    root: Path,
    name: str,
    *,
    subnet: int,
    label: str,
    api_port: int,
    config: Callable[[Path], str],
    gateway: Callable[[Path], list[str]] = gateway_argv,
    extra_headers: Sequence[tuple[str, str]] = (),
    expect_field: bytes | None = None,
) -> Copy:
    """One copy: gateways ``a`` and ``b`` on ``127.0.<subnet>.1`` / ``127.0.<subnet+1>.1``,
    ``api`` (an HTTP/1.1 echo on ``api_port``) in ``b``, each gateway's config file followed by
    ``config(its directory)`` and started with ``gateway(config path)``; returned once a request
    through ``a`` got a 200."""
    sites = tuple(
        DemoSite(
            name=site,
            trust_domain=TrustDomain(f"{site}.{label}.test"),
            address=ipaddress.IPv4Address(f"127.0.{subnet + i}.1"),
            services=(DemoService("api", "http", api_port),) if site == "b" else (),
            priority=10 * (i + 1),
            workers=0,  # one process, as the figures in the README were measured
        )
        for i, site in enumerate(("a", "b"))
    )
    topology = Topology(sites=sites, ping_interval_s=1.0, ping_timeout_s=2.0)
    directory = root / name.replace("+", "-")
    built = await trio.to_thread.run_sync(build_topology, topology, directory)
    pids = []
    for b in built:
        with b.config_path.open("a", encoding="utf-8") as f:
            f.write(config(b.directory))
        argv = [*gateway(b.config_path), "--log-level", "warning"]
        child = await fleet.start(f"{name}-{b.site.name}", argv)
        pids.append(child.process.pid)
        for svc in b.site.services:
            argv = service_argv(svc.kind, str(b.site.address), svc.port, b.site.name)
            await fleet.start(f"{name}-{b.site.name}-{svc.service}", argv)
    copy = Copy(
        name, str(sites[0].address), topology.http_port, pids, extra_headers, expect_field
    )
    return await wait_ready(copy, API, fleet=fleet)


Results = dict[str, list[float]]


def run_bench(
    prog: str,
    doc: str | None,
    bench: Callable[[argparse.Namespace, Path], Awaitable[Results]],
    argv: list[str] | None,
    *,
    requests: int = 3000,
    connections: int = 8,
) -> Results | None:
    """The copy benchmarks' command line (``--requests --rounds --connections --keep``) and run,
    in a work directory removed afterwards (unless ``--keep``); None after a BenchError
    (printed)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0] if doc else None)
    parser.add_argument("--requests", type=int, default=requests, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=connections)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix=f"isthmus-{prog.replace('_', '-')}-"))
    try:
        return trio.run(bench, args, root)
    except BenchError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return None
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
