#!/usr/bin/env python3
"""Benchmark the data plane against HAProxy and a direct connection, as same-run ratios.

Three topologies in front of one C backend (nginx: a small body and a 1 MiB file; iperf3):

A. direct          client -> backend
B. HAProxy chain   client -> HAProxy A -> mTLS (TLS 1.3, client certs from the project's dev
                   CA, verify required) -> HAProxy B -> backend; each HAProxy ``nbthread 1``;
                   "haproxy 1-hop" is HAProxy A straight to the backend
C. Isthmus         client -> site A's gateway (http listener / service port) -> link ->
                   site B's gateway -> backend ("isthmus 1-hop": a site-A service, no link)

Measured, each target back to back in the same run (absolute numbers on shared 2-core
machines are noise; the ratios are the result):

* L7 small:    wrk, fixed connections, max req/s; and req/s per proxy CPU second ("per core":
               CPU from /proc/<pid>/stat of the HAProxy / gateway processes, before and after)
* L7 latency:  open-loop client at a fixed moderate rate, p50/p99 from the intended send time
* L7 1MiB:     wrk GET of a 1 MiB file, MB/s (through the http listener / HTTP chain)
* L4 1MiB:     the same GET over an opaque TCP path (service port / HAProxy tcp mode)
* L4 bulk:     one iperf3 TCP stream, each direction, MB/s

Run (as root it installs haproxy, wrk, nginx-light, iperf3 from Debian if missing):

    .venv/bin/python scripts/bench_dataplane.py            # ~4 minutes
    .venv/bin/python scripts/bench_dataplane.py --quick    # ~1 minute
    .venv/bin/python scripts/bench_dataplane.py --skip-isthmus   # A and B only

Options for working on the data plane: ``--tests small,bulk-up`` and ``--targets "isthmus
2-hop,haproxy 2-hop"`` run a subset; ``--rounds N`` repeats and reports medians; ``--limit
h2_stream_window=1048576`` appends a ``[limits]`` setting to both gateways' configs;
``--profile`` runs the gateways under cProfile and prints their hottest functions (figures of
such a run are not results); ``--json FILE`` writes every sample; ``--keep`` keeps the work
directory (configs, certificates, logs).

``--workers`` adds the targets ``isthmus 1-hop w1``, ``isthmus 1-hop w2``, ``isthmus 2-hop w1``
and ``isthmus 2-hop w2``: two more copies of topology C (the same sites on other ports) whose
gateways run ``[site] workers = 1`` and ``2`` (a supervisor and that many data-plane worker
processes sharing the listeners with SO_REUSEPORT); their CPU is the supervisor's plus its
workers'.  The summary then compares 1 and 2 workers (and the single process, ``isthmus
1-hop``) within the run: req/s and CPU per request.  Naming a worker target in ``--targets``
starts its copy too; for the figure alone:

    .venv/bin/python scripts/bench_dataplane.py --tests small \
        --targets "isthmus 1-hop,isthmus 1-hop w1,isthmus 1-hop w2"

``--observe`` measures what metrics and access logs cost, in the same run: the Isthmus
targets run with ``[metrics]`` on and ``[access_log]`` on (to a file), and a second copy of
topology C (the same sites on other ports, in front of the same backend) with ``[metrics]
enabled = false`` and no access log adds the L7 targets ``isthmus 1-hop off`` and ``isthmus
2-hop off``; the summary then gives the gateway CPU per request on and off, and both as
ratios to the minimal trio proxy's (``--tests small`` is enough for that figure).

What it prints: one line per measurement (``[test] target  figure  proxy CPU s -> per core``),
then a summary whose lines read like ``L7 small req/s per core: isthmus 1-hop X, 2-hop Y;
haproxy 1-hop W, 2-hop Z; ratio 2-hop Y/Z (target >= 0.25)`` and ``L4 bulk up MB/s (1 TCP
stream): isthmus X, haproxy Y, direct D; ratio X/Y (target >= 0.8)``.  A figure measured with
errors (non-2xx, socket errors) is printed but marked invalid and left out of the ratios.

Only loopback addresses (127.0.11.1 - 127.0.14.1); every process it starts is stopped by PID
on exit, error or Ctrl-C.  Exit status 0 when every figure was measured, 1 when some target
failed (the reason is printed), 2 on a setup error.
"""

from __future__ import annotations

import argparse
import fcntl
import io
import json
import os
import pstats
import shutil
import signal
import sys
import tempfile
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import trio  # noqa: E402
from bench.backend import (  # noqa: E402
    BULK_PATH,
    BULK_SIZE,
    SMALL_BODY,
    SMALL_PATH,
    BackendAddrs,
    start_backend,
)
from bench.floor_l4_start import FLOOR_L4_NEAR, start_floor_l4  # noqa: E402
from bench.h2_floor import h2_exchange_cpu_us, lean_exchange_cpu_us  # noqa: E402
from bench.haproxy import HaproxyAddrs, start_haproxy_chain  # noqa: E402
from bench.isthmus import SITE_A, SITE_B, IsthmusSites, profile_path, start_isthmus  # noqa: E402
from bench.load import open_loop, probe, run_iperf, run_wrk  # noqa: E402
from bench.observe import OFF, OFF_SUFFIX, ON, VARIANTS, observe_summary  # noqa: E402
from bench.procs import BenchError, Fleet, cpu_seconds, need_tools, wait_port  # noqa: E402
from bench.report import Sample, combine, summary, workers_summary  # noqa: E402

from gateway.config.model import LimitsConfig  # noqa: E402

SITE_A_HOST, SITE_B_HOST = "127.0.11.1", "127.0.12.1"
HAPROXY_A_HOST, HAPROXY_B_HOST = "127.0.13.1", "127.0.14.1"
BACKEND = BackendAddrs(
    http_hosts=(SITE_A_HOST, SITE_B_HOST),
    http_port=18080,
    tcp_alias_host=SITE_B_HOST,
    tcp_alias_port=18081,
    iperf_host=SITE_B_HOST,
    iperf_port=15201,
)
TESTS = {  # command-line key -> test name
    "small": "L7 small",
    "latency": "L7 latency",
    "l7-1mib": "L7 1MiB",
    "l4-1mib": "L4 1MiB",
    "bulk-up": "L4 bulk up",
    "bulk-down": "L4 bulk down",
}
TARGETS = (
    "direct",
    "haproxy 1-hop",
    "haproxy 2-hop",
    "trio floor 1-hop",
    "trio floor 2-hop",
    "isthmus 1-hop",
    "isthmus 2-hop",
    f"isthmus 1-hop{OFF_SUFFIX}",
    f"isthmus 2-hop{OFF_SUFFIX}",
    "isthmus 1-hop w1",
    "isthmus 1-hop w2",
    "isthmus 2-hop w1",
    "isthmus 2-hop w2",
)
#: ``--workers``: ``[site] workers`` of each extra copy of topology C -> its port offset.
WORKER_COPIES = {1: 600, 2: 900}
#: ``--observe``: the copy with observation off listens on the same addresses, these ports on.
OFF_PORT_OFFSET = 300
LOCK_PATH = Path(tempfile.gettempdir()) / "isthmus-bench-dataplane.lock"
#: The minimal trio proxy (scripts/bench/floor.py) in front of site A's nginx.
FLOOR_HOST, FLOOR_PORT = "127.0.15.1", 18090
TOOLS = {
    "haproxy": "haproxy",
    "wrk": "wrk",
    "nginx": "nginx-light",
    "iperf3": "iperf3",
}


@dataclass(frozen=True)
class Settings:
    seconds: float  # each wrk run
    latency_seconds: float
    rate: float
    connections: int
    bulk_connections: int
    stream_seconds: float
    rounds: int
    tests: frozenset[str]  # names of TESTS to run
    targets: frozenset[str]  # target names to run (empty: all)


@dataclass(frozen=True)
class Target:
    name: str
    host: str
    port: int
    host_header: str
    pids: tuple[int, ...]  # the proxies whose CPU this target costs
    failed: str = ""


def l7_targets(
    chain_pids: tuple[int, int],
    floor_pid: int,
    sites: IsthmusSites | None,
    why: str,
    off_sites: IsthmusSites | None = None,
    worker_sites: dict[int, IsthmusSites] | None = None,
) -> list[Target]:
    backend = f"{SITE_B_HOST}:{BACKEND.http_port}"
    h = HaproxyAddrs(HAPROXY_A_HOST, HAPROXY_B_HOST)
    targets = [
        Target("direct", SITE_B_HOST, BACKEND.http_port, backend, ()),
        Target("haproxy 1-hop", h.a_host, h.l7_local_port, backend, chain_pids),
        Target("haproxy 2-hop", h.a_host, h.l7_port, backend, chain_pids),
        Target("trio floor 1-hop", FLOOR_HOST, FLOOR_PORT, backend, (floor_pid,)),
    ]
    for name, site in (("isthmus 1-hop", SITE_A), ("isthmus 2-hop", SITE_B)):
        header = IsthmusSites.host_header(site)
        if sites is None:
            targets.append(Target(name, SITE_A_HOST, 0, header, (), why))
        else:
            targets.append(Target(name, SITE_A_HOST, sites.http_port, header, sites.pids))
        if off_sites is not None:  # --observe: the same target with observation off
            off = (name + OFF_SUFFIX, SITE_A_HOST, off_sites.http_port, header, off_sites.pids)
            targets.append(Target(*off))
        for count, copy in sorted((worker_sites or {}).items()):  # --workers
            w = (f"{name} w{count}", SITE_A_HOST, copy.http_port, header, copy.pids)
            targets.append(Target(*w))
    return targets


def l4_targets(
    chain_pids: tuple[int, int],
    floor_pids: tuple[int, int],
    sites: IsthmusSites | None,
    why: str,
    *,
    bulk: bool,
) -> list[Target]:
    h = HaproxyAddrs(HAPROXY_A_HOST, HAPROXY_B_HOST)
    port = BACKEND.iperf_port if bulk else BACKEND.tcp_alias_port
    targets = [
        Target("direct", SITE_B_HOST, port, "", ()),
        Target(
            "haproxy 2-hop", h.a_host, h.l4_bulk_port if bulk else h.l4_web_port, "", chain_pids
        ),
    ]
    if bulk:  # the floor relays to the iperf3 sink only
        targets.append(Target("trio floor 2-hop", *FLOOR_L4_NEAR, "", floor_pids))
    if sites is None:
        targets.append(Target("isthmus 2-hop", SITE_A_HOST, 0, "", (), why))
    else:
        port = sites.bulk_port if bulk else sites.web_tcp_port
        targets.append(Target("isthmus 2-hop", SITE_A_HOST, port, "", sites.pids))
    return targets


Measure = Callable[[Target], Awaitable[Sample]]


async def measured(fleet: Fleet, test: str, target: Target, run: Measure) -> Sample:
    """Run one measurement with the proxies' CPU seconds around it; failures become a Sample."""
    if target.failed:
        return Sample(test, target.name, failed=target.failed)
    fleet.check_alive()
    before = cpu_seconds(list(target.pids))
    try:
        sample = await run(target)
    except BenchError as exc:
        return Sample(test, target.name, failed=str(exc))
    fleet.check_alive()
    if target.pids:
        cpu = cpu_seconds(list(target.pids)) - before
        sample = Sample(**{**sample.__dict__, "cpu_s": cpu})
    return sample


async def check(target: Target, path: str, size: int) -> None:
    """One GET first: a target that answers wrongly must not produce a figure."""
    host_header = target.host_header or f"{target.host}:{target.port}"
    status, length = await probe(target.host, target.port, host_header, path)
    if status != 200 or length != size:
        raise BenchError(
            f"GET {path} via {target.name} gave status {status}, {length} bytes "
            f"(expected 200, {size})"
        )


def wrk_test(test: str, path: str, size: int, connections: int, seconds: float) -> Measure:
    async def run(target: Target) -> Sample:
        await check(target, path, size)
        url = f"http://{target.host}:{target.port}{path}"
        result = await run_wrk(
            url, host_header=target.host_header or None, connections=connections, seconds=seconds
        )
        errors = result.non_2xx + result.socket_errors
        if size > 1024:  # bulk: MB/s of bodies
            mb = result.requests * size / 1e6
            return Sample(test, target.name, mb / result.seconds, "MB/s", mb, errors=errors)
        return Sample(test, target.name, result.rps, "req/s", result.requests, errors=errors)

    return run


def latency_test(settings: Settings) -> Measure:
    async def run(target: Target) -> Sample:
        await check(target, SMALL_PATH, len(SMALL_BODY))
        result = await open_loop(
            target.host,
            target.port,
            target.host_header,
            SMALL_PATH,
            rate=settings.rate,
            seconds=settings.latency_seconds,
        )
        return Sample(
            "L7 latency",
            target.name,
            unit=f"{settings.rate:g} req/s",
            errors=result.errors,
            p50_ms=result.quantile(0.50) * 1e3,
            p99_ms=result.quantile(0.99) * 1e3,
        )

    return run


def iperf_test(test: str, seconds: float, *, reverse: bool) -> Measure:
    async def run(target: Target) -> Sample:
        result = await run_iperf(target.host, target.port, seconds=seconds, reverse=reverse)
        mb = result.bytes / 1e6
        return Sample(test, target.name, result.mb_per_s, "MB/s", mb)

    return run


async def bench(
    settings: Settings,
    root: Path,
    *,
    skip_isthmus: bool,
    profile: bool,
    limits: dict[str, int | float | str],
    out: list[Sample],
    problems: list[str],
    observe: bool = False,
    worker_counts: tuple[int, ...] = (),
) -> None:
    async with Fleet(root / "logs") as fleet:
        await start_backend(fleet, BACKEND, root / "backend")
        haproxy = HaproxyAddrs(HAPROXY_A_HOST, HAPROXY_B_HOST)
        chain = await start_haproxy_chain(fleet, haproxy, BACKEND, root / "haproxy")
        chain_pids = (chain.pid_a, chain.pid_b)
        floor = await fleet.start(
            "trio-floor",
            [
                sys.executable,
                str(HERE / "bench" / "floor.py"),
                *(FLOOR_HOST, str(FLOOR_PORT), SITE_A_HOST, str(BACKEND.http_port)),
            ],
        )
        await wait_port(FLOOR_HOST, FLOOR_PORT, fleet=fleet)
        unit = int(limits.get("tunnel_buffer_bytes", LimitsConfig().tunnel_buffer_bytes))
        floor_pids = await start_floor_l4(fleet, root / "floor", unit, BACKEND)
        sites: IsthmusSites | None = None
        off_sites: IsthmusSites | None = None
        worker_sites: dict[int, IsthmusSites] = {}
        why = "skipped (--skip-isthmus)"
        if not skip_isthmus:
            try:
                sites = await start_isthmus(
                    fleet,
                    SITE_A_HOST,
                    SITE_B_HOST,
                    BACKEND,
                    root / "isthmus",
                    profile=profile,
                    limits=limits,
                    extra=VARIANTS[ON] if observe else "",
                )
                if observe:
                    off_sites = await start_isthmus(
                        fleet,
                        SITE_A_HOST,
                        SITE_B_HOST,
                        BACKEND,
                        root / "isthmus-off",
                        profile=profile,
                        limits=limits,
                        port_offset=OFF_PORT_OFFSET,
                        extra=VARIANTS[OFF],
                        name="gateway-off",
                    )
                for count in worker_counts:  # --workers: one more copy per worker count
                    worker_sites[count] = await start_isthmus(
                        fleet,
                        SITE_A_HOST,
                        SITE_B_HOST,
                        BACKEND,
                        root / f"isthmus-w{count}",
                        profile=profile,
                        limits=limits,
                        port_offset=WORKER_COPIES[count],
                        extra=VARIANTS[ON] if observe else "",
                        name=f"gateway-w{count}",
                        workers=count,
                    )
            except BenchError as exc:
                sites = off_sites = None
                worker_sites = {}
                problems.append(f"Isthmus topology unavailable: {exc}")
                why = "Isthmus topology unavailable (reason above and at the end)"
                print(f"!! {problems[-1]}\n!! going on with topologies A and B only", flush=True)
                for child in [c for c in fleet.children if c.name.startswith("gateway-")]:
                    await fleet.stop(child)
        print(f"all servers up; work directory {root}", flush=True)

        async def series(test: str, targets: list[Target], run: Measure) -> None:
            if test not in settings.tests:
                return
            for target in targets:
                if settings.targets and target.name not in settings.targets:
                    continue
                sample = await measured(fleet, test, target, run)
                print(sample.line(), flush=True)
                out.append(sample)

        for round_no in range(1, settings.rounds + 1):
            if settings.rounds > 1:
                print(f"-- round {round_no} of {settings.rounds}", flush=True)
            await one_round(
                settings,
                series,
                chain_pids,
                floor.process.pid,
                floor_pids,
                sites,
                why,
                off_sites,
                worker_sites,
            )
        if "L7 small" in settings.tests:
            # In this process, between measurements: nothing else of ours is running.
            codec_us = h2_exchange_cpu_us()
            print(f"[L7 small] h2 codec alone  {codec_us:10.1f} us CPU per exchange", flush=True)
            out.append(Sample("L7 small", "h2 codec", codec_us, "us/exchange"))
            lean_us = lean_exchange_cpu_us()
            print(f"[L7 small] lean codec alone {lean_us:9.1f} us CPU per exchange", flush=True)
            out.append(Sample("L7 small", "lean codec", lean_us, "us/exchange"))


async def one_round(
    s: Settings,
    series: Callable[[str, list[Target], Measure], Awaitable[None]],
    chain_pids: tuple[int, int],
    floor_pid: int,
    floor_pids: tuple[int, int],
    sites: IsthmusSites | None,
    why: str,
    off_sites: IsthmusSites | None = None,
    worker_sites: dict[int, IsthmusSites] | None = None,
) -> None:
    """Every test once, each over all its targets back to back (so they share conditions)."""
    l7 = l7_targets(chain_pids, floor_pid, sites, why, off_sites, worker_sites)
    await series(
        "L7 small",
        l7,
        wrk_test("L7 small", SMALL_PATH, len(SMALL_BODY), s.connections, s.seconds),
    )
    await series("L7 latency", l7, latency_test(s))
    await series(
        "L7 1MiB", l7, wrk_test("L7 1MiB", BULK_PATH, BULK_SIZE, s.bulk_connections, s.seconds)
    )
    l4web = l4_targets(chain_pids, floor_pids, sites, why, bulk=False)
    await series(
        "L4 1MiB",
        l4web,
        wrk_test("L4 1MiB", BULK_PATH, BULK_SIZE, s.bulk_connections, s.seconds),
    )
    l4bulk = l4_targets(chain_pids, floor_pids, sites, why, bulk=True)
    await series("L4 bulk up", l4bulk, iperf_test("L4 bulk up", s.stream_seconds, reverse=False))
    await series("L4 bulk down", l4bulk, iperf_test("L4 bulk down", s.stream_seconds, reverse=True))


def print_profiles(root: Path, top: int = 25) -> None:
    """The functions where each gateway spent its own time (cProfile, by tottime)."""
    for site in (SITE_A, SITE_B):
        path = profile_path(root, site)
        if not path.exists():
            print(f"\nno profile for {site} ({path} missing: gateway killed, not stopped?)")
            continue
        print(f"\nProfile of gateway {site} (cProfile; figures of this run are slowed by it):")
        stream = io.StringIO()
        pstats.Stats(str(path), stream=stream).sort_stats("tottime").print_stats(top)
        print(stream.getvalue().split("\n\n", 1)[-1].rstrip())


class Stopped(Exception):
    """SIGTERM or SIGHUP arrived: every process was stopped, like on Ctrl-C."""


async def until_signal(work: Callable[[], Awaitable[None]]) -> None:
    """Run ``work``; SIGTERM/SIGHUP cancel it (so its cleanup runs) and raise :class:`Stopped`.

    Errors of ``work`` are caught inside the nursery and re-raised outside it, so callers see
    a plain BenchError / KeyboardInterrupt, not an exception group.
    """
    caught: list[BaseException] = []
    signals: list[int] = []
    async with trio.open_nursery() as nursery:

        async def watch() -> None:
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGHUP) as received:
                async for signum in received:
                    signals.append(signum)
                    nursery.cancel_scope.cancel()
                    return

        nursery.start_soon(watch)
        try:
            await work()
        except (BenchError, KeyboardInterrupt) as exc:
            caught.append(exc)
        except BaseExceptionGroup as group:  # Ctrl-C inside a nursery of ``work``
            if group.subgroup(KeyboardInterrupt) is None:
                raise
            caught.append(KeyboardInterrupt())
        finally:
            nursery.cancel_scope.cancel()
    if caught:
        raise caught[0]
    if signals:
        raise Stopped(signal.Signals(signals[0]).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="short runs (~1 minute in all)")
    parser.add_argument("--skip-isthmus", action="store_true", help="topologies A and B only")
    parser.add_argument("--seconds", type=float, help="length of each wrk run (default 8; quick 2)")
    parser.add_argument("--rate", type=float, default=200.0, help="latency test req/s (200)")
    parser.add_argument("--connections", type=int, default=16, help="wrk connections, small (16)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat every test N times, report medians (1)"
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="run the gateways under cProfile and print their hottest functions (slows them)",
    )
    parser.add_argument(
        "--tests",
        default=",".join(TESTS),
        help=f"comma-separated subset of {','.join(TESTS)} (default: all)",
    )
    parser.add_argument(
        "--targets",
        default="",
        help=f"comma-separated subset of {','.join(TARGETS)} (default: all)",
    )
    parser.add_argument(
        "--limit",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a gateway [limits] setting for both sites, e.g. h2_stream_window=1048576 (repeat)",
    )
    parser.add_argument(
        "--observe",
        action="store_true",
        help="metrics + access log on for the Isthmus targets, and a second copy with both "
        "off (targets 'isthmus 1-hop off', 'isthmus 2-hop off'): their CPU per request",
    )
    parser.add_argument(
        "--workers",
        action="store_true",
        help="also the targets 'isthmus 1-hop w1', 'isthmus 1-hop w2', 'isthmus 2-hop w1', "
        "'isthmus 2-hop w2': copies of topology C whose gateways run 1 and 2 worker processes",
    )
    parser.add_argument("--json", type=Path, help="also write every sample to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 20:
        parser.error("--rounds must be 1..20")
    if args.seconds is not None and not 1 <= args.seconds <= 120:
        parser.error("--seconds must be 1..120")
    if not 1 <= args.rate <= 5000 or not 1 <= args.connections <= 1000:
        parser.error("--rate must be 1..5000 and --connections 1..1000")
    limits: dict[str, int | float | str] = {}
    for item in args.limit:
        key, sep, value = item.partition("=")
        try:
            limits[key.strip()] = float(value) if "." in value else int(value)
        except ValueError:
            limits[key.strip()] = value.strip()  # a word: link_h2_engine=h2
        if not sep or not key.strip():
            parser.error(f"--limit {item!r}: use KEY=NUMBER")
    tests = [t.strip() for t in args.tests.split(",") if t.strip()]
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    if not tests or any(t not in TESTS for t in tests):
        parser.error(f"--tests: choose among {', '.join(TESTS)}")
    if any(t not in TARGETS for t in targets):
        parser.error(f"--targets: choose among {', '.join(TARGETS)}")
    # A worker copy runs when --workers asks for all of them or --targets names one of it.
    worker_counts = tuple(
        count
        for count in sorted(WORKER_COPIES)
        if args.workers or any(t.endswith(f" w{count}") for t in targets)
    )
    seconds = args.seconds or (2.0 if args.quick else 8.0)
    settings = Settings(
        seconds=seconds,
        latency_seconds=seconds,
        rate=args.rate,
        connections=args.connections,
        bulk_connections=4,
        stream_seconds=seconds,
        rounds=args.rounds,
        tests=frozenset(TESTS[t] for t in tests),
        targets=frozenset(targets),
    )
    try:
        need_tools(TOOLS)
    except BenchError as exc:
        print(f"bench_dataplane: {exc}", file=sys.stderr)
        return 2
    # Two runs at once would fight over the same fixed loopback ports and CPUs: wait instead.
    lock = open(LOCK_PATH, "a")  # noqa: SIM115 -- held until the process exits
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"another benchmark run holds {LOCK_PATH}; waiting for it", flush=True)
        fcntl.flock(lock, fcntl.LOCK_EX)
    root = Path(tempfile.mkdtemp(prefix="isthmus-bench-dp-"))
    os.chmod(root, 0o755)
    print(
        f"Isthmus data-plane benchmark: {os.cpu_count()} CPUs, loopback; wrk {seconds:g} s, "
        f"{settings.connections} conns (small) / {settings.bulk_connections} (1 MiB); latency "
        f"{settings.rate:g} req/s x {settings.latency_seconds:g} s; 1 TCP stream "
        f"{settings.stream_seconds:g} s each way",
        flush=True,
    )
    samples: list[Sample] = []
    problems: list[str] = []
    status = 0
    try:
        work = partial(
            bench,
            settings,
            root,
            skip_isthmus=args.skip_isthmus,
            profile=args.profile,
            limits=limits,
            out=samples,
            problems=problems,
            observe=args.observe,
            worker_counts=worker_counts,
        )
        trio.run(until_signal, work)
    except (KeyboardInterrupt, Stopped) as exc:
        print(f"interrupted ({exc!r}); every process started was stopped", file=sys.stderr)
        print(f"work directory (logs): {root}", file=sys.stderr)
        return 130
    except BenchError as exc:
        print(f"bench_dataplane: {exc}", file=sys.stderr)
        print(f"logs kept in {root}", file=sys.stderr)
        return 2
    print("\nSummary (ratios are Isthmus / HAProxy within this run):")
    if settings.rounds > 1:
        samples = combine(samples)
        print("\nMedians over rounds:")
        for sample in samples:
            print(sample.line())
    for line in summary(samples):
        print("  " + line)
    if args.observe:
        for line in observe_summary(samples):
            print("  " + line)
    for line in workers_summary(samples):
        print("  " + line)
    failed = [s for s in samples if (s.failed and not s.failed.startswith("skipped")) or s.errors]
    if failed:
        status = 1
        print("\nNot measured / invalid:")
        reasons = [*problems]
        for s in failed:
            reason = s.failed or f"[{s.test}] {s.target}: {s.errors} errors"
            if reason not in reasons and not reason.startswith("Isthmus topology unavailable"):
                reasons.append(reason)
        for reason in reasons:
            print("  " + reason.replace("\n", "\n  "))
        print(f"logs kept in {root}")
    if args.profile:
        print_profiles(root / "isthmus")
    if args.json:
        args.json.write_text(json.dumps([s.as_dict() for s in samples], indent=2) + "\n")
    if not failed and not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    elif args.keep:
        print(f"work directory kept: {root}")
    return status


if __name__ == "__main__":
    sys.exit(main())
