#!/usr/bin/env python3
"""Benchmark event-loop stalls where users feel them: request latency while the catalog works.

Two real gateway processes on loopback (site ``stalla`` under test, site ``stallb`` its peer),
a small HTTP backend, and a Consul-API server (``scripts/bench/consul_bulk.py``, built on the
project's Consul test server in tests/consul_api/) holding N endpoints (default 100 000 in 500
services) that site A's ``consul`` source watches.  Site B (``scripts/bench/peer_site.py``: the
real peering layer in its own process, as a gateway's config cannot hold 100k static endpoints)
exports N endpoints of its own (10 per service) to A.  Gateway A runs under
``scripts/bench/lag_probe.py``: a trio instrument that records, per 100 ms window, the longest
*loop stall* -- the longest scheduler batch, from one poll for I/O to the next, in CPU time of
the loop's thread: a request whose bytes arrive meanwhile is not even noticed before it ends;
the same in wall time (``wall``: includes waiting for a core, which on a shared 2-core machine
is other processes' doing -- the Consul server, the peer, the load client) -- the longest
single task step (one piece of work), the longest cyclic-GC pass, and RSS.  ``--heap-budget
inf`` runs gateway A without the heap keeper, to measure what it buys.

Each phase sends an open-loop load (``--rate`` GET/s over 8 connections) through A's http
listener to the backend (one hop), and reports p50/p99/max request latency and the stall
figures measured during the phase, and gateway A's CPU seconds per second of the phase
(``CPU/s``: what the phase's work costs, whatever else runs on the machine), the Consul
stand-in's CPU seconds per second (``cons/s``: in production Consul runs elsewhere) and the
whole machine's busy cores (``busy``: near the core count, latencies measure the machine's run
queue, not the gateway):

* ``baseline``      nothing changes;
* ``consul-resync`` every one of the N Consul instances changes at once (a big rollout, or a
  reconnect that finds everything different): a source resync of N endpoints;
* ``peer-snapshot`` site B restarts: its link comes back and A imports B's full snapshot
  (N endpoints, N/10 services);
* ``burn``          (``--burn DUTY`` only, right after the baseline) nothing changes, and
  ``scripts/bench/burner.py`` decodes JSON for DUTY of every 10 ms beside the gateway: the
  latency that work of that size anywhere on the machine costs the data path -- the reference
  for the churn's;
* ``quiet``         nothing changes, as in ``baseline``, but after the resync and the peer's
  snapshot: the state the churn starts from (the summary compares the churn with both; an
  earlier attempt to switch the churn on and off within one phase measured nothing: the
  supervisor, at a lower priority on a busy machine, was still catching up in the "off"
  seconds);
* ``churn``         1 % of the Consul instances change every second;
* ``admin``         nothing changes, and an operator reads every large admin answer in turn
  (``/catalog``: 100k local endpoints, ``/imports``: the peer's 10k services, ``/routes``,
  ``/overlay``, ``/metrics``), each from a fresh connection; the time each took is printed.

``--workers N`` runs gateway A with ``[site] workers = N``: a supervisor (discovery, federation,
the admin API: the Consul churn lands there) and N data-plane worker processes that serve the
requests from the snapshots the supervisor pushes.  Then the request latencies are the
workers', ``CPU/s`` is the supervisor's plus its workers' (``wk/s``: the workers' part), and
the workers' loops are probed too: ``lag_probe.py --worker-lag DIR`` hands its children a
``PYTHONPATH`` with ``scripts/bench/worker_lag/``, whose ``sitecustomize.py`` installs the same
probe in each ``gateway.cli worker`` process (``DIR/worker-<index>-<pid>.tsv``; no product code
changes; at most 256 files, each capped at 64 MiB).  The run refuses to measure if a worker has
no file within 30 s of its start.  The columns ``stall``/``wall``/``step``/``gc``/``RSS`` are
then the supervisor's, ``wk stall``/``wk wall``/``wk step``/``wk gc`` the worst over the
workers in the phase (each figure its own worst) and ``wk RSS`` each worker's; the longest
worker step is named after the supervisor's with its worker's pid.  The data path's loop is
the process's in one-process mode and the workers' in worker mode: the summary's target line
and the exit status use that one, and print the supervisor's worst beside it.
``--heap-budget``/``--decoder`` change the supervisor only, ``--worker-heap-budget`` the
workers' keeper.  ``gc/s``: the data path's loops' cyclic-GC CPU in ms per second of the phase
(the workers' together in worker mode).  ``--supervisor-nice N`` sets
gateway A's ``[site] supervisor_nice`` (the gateway's default is 10: the supervisor's threads
run at a lower CPU priority than its workers); 0 to compare without.

Targets: no loop stall over 50 ms on the data path's loop; request p99 during churn <= 1.5 x
baseline p99.
Run:  .venv/bin/python scripts/bench_stall.py [--endpoints 100000] [--seconds 8] [--rate 200]
      [--workers N]
Only loopback addresses (127.0.31.1, 127.0.32.1); every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import trio  # noqa: E402
from bench.lag_window import (  # noqa: E402
    task_cpu,
    window,
    worker_files,
    workers_task_cpu,
    workers_window,
)
from bench.load import LatencyResult, open_loop  # noqa: E402
from bench.procs import (  # noqa: E402
    BenchError,
    Fleet,
    child_pids,
    cpu_seconds,
    machine_busy_s,
    pin_threads,
    process_cpu_seconds,
    rss_mb,
    wait_port,
)

from foundation.spiffe_id import TrustDomain  # noqa: E402
from gateway.demo.admin_client import AdminUnavailable, admin_get  # noqa: E402
from gateway.demo.runner import gateway_argv, service_argv  # noqa: E402
from gateway.demo.topology import DemoService, DemoSite, Topology, build_topology  # noqa: E402

A_HOST, B_HOST = "127.0.31.1", "127.0.32.1"
SITE_A, SITE_B = "stalla", "stallb"
CONSUL_PORT = 28500
BACKEND_PORT = 28080
HOST_HEADER = f"web.default.{SITE_A}.isthmus"
READY_S = 600.0


def topology(workers: int = 0) -> Topology:
    """Both sites; ``workers``: ``[site] workers`` of gateway A (written out: the gateway's
    own default, ``auto``, depends on the machine)."""
    web = DemoService("web", "http", BACKEND_PORT)
    a_addr = ipaddress.IPv4Address(A_HOST)
    sites = (
        DemoSite(SITE_A, TrustDomain(f"{SITE_A}.bench"), a_addr, (web,), workers=workers),
        DemoSite(
            SITE_B, TrustDomain(f"{SITE_B}.bench"), ipaddress.IPv4Address(B_HOST), (), workers=0
        ),
    )
    return Topology(
        sites=sites,
        east_west_port=28443,
        admin_port=28000,
        http_port=28081,
        sni_port=28444,
        import_grace_s=600.0,
    )


def consul_source() -> str:
    return (
        '\n[[sources]]\nkind = "consul"\nname = "consul"\n'
        f'address = "http://{A_HOST}:{CONSUL_PORT}"\nwait_s = 30.0\n'
    )


def rss_line(pid: int) -> str:
    """Gateway A's RSS, and its workers' when it has any (each worker holds its own copy of
    the catalog and import table)."""
    text = f"gateway A RSS {rss_mb(pid):.0f} MB"
    workers = []
    for child in child_pids(pid):
        try:
            workers.append(rss_mb(child))
        except OSError:
            continue
    if workers:
        text += " (supervisor); workers " + ", ".join(f"{w:.0f}" for w in workers) + " MB"
    return text


async def routes_count(base: str) -> int:
    try:
        answer = await admin_get(base, "/routes", request_timeout_s=30.0)
    except AdminUnavailable:
        return -1
    return len(answer.get("routes", {}))


async def wait_routes(fleet: Fleet, base: str, at_least: int, within: float) -> int:
    last = -1
    with trio.move_on_after(within):
        while True:
            fleet.check_alive()
            last = await routes_count(base)
            if last >= at_least:
                return last
            await trio.sleep(1.0)
    raise BenchError(f"{base}/routes lists {last} services, wanted >= {at_least}")


async def wait_workers(pid: int, count: int, fleet: Fleet) -> None:
    """Wait (a bounded while) until gateway A has ``count`` worker processes; BenchError if not:
    a figure of worker mode measured without its workers would be a wrong figure."""
    with trio.move_on_after(60):
        while len(child_pids(pid)) < count:
            fleet.check_alive()
            await trio.sleep(0.5)
        print(f"# gateway A: supervisor {pid}, workers {child_pids(pid)}", flush=True)
        return
    raise BenchError(f"gateway A has {len(child_pids(pid))} worker processes, wanted {count}")


async def wait_worker_probes(pid: int, lag_dir: Path, fleet: Fleet) -> None:
    """Wait (30 s at most) until every worker of gateway A writes its lag probe's TSV;
    BenchError if one does not: its stalls would be missing from the figures, not zero."""
    missing: list[int] = []
    with trio.move_on_after(30):
        while True:
            fleet.check_alive()
            files = worker_files(lag_dir)
            missing = [w for w in child_pids(pid) if w not in files or not files[w].stat().st_size]
            if not missing:
                print(f"# worker lag files: {sorted(p.name for p in files.values())}", flush=True)
                return
            await trio.sleep(0.5)
    raise BenchError(f"workers {missing} of gateway A write no lag probe file in {lag_dir}")


ADMIN_PATHS = ("/catalog", "/imports", "/routes", "/overlay", "/metrics")
ADMIN_MAX_BYTES = 1 << 30


async def admin_body(host: str, port: int, path: str) -> int:
    """GET ``path`` from the admin port; the body's size (read to the end, then dropped)."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n".encode()
        )
        size = 0
        while size < ADMIN_MAX_BYTES:
            data = await stream.receive_some(1 << 20)
            if not data:
                break
            size += len(data)
        return size


async def read_admin(host: str, port: int, took: dict[str, tuple[float, float, int]]) -> None:
    """Each admin answer in turn (0.5 s apart): wall-clock start, end and size of each."""
    for path in ADMIN_PATHS:
        await trio.sleep(0.5)
        t0 = time.time()
        with trio.fail_after(120):
            size = await admin_body(host, port, path)
        took[path] = (t0, time.time(), size)


OTHERS: dict[str, int] = {}
"""Processes beside gateway A whose CPU each phase reports (the Consul stand-in)."""


def others_cpu() -> dict[str, float]:
    out: dict[str, float] = {}
    for name, other in OTHERS.items():
        cpu = process_cpu_seconds(other)
        if cpu is not None:  # else it was restarted or stopped: no figure
            out[name] = cpu
    return out


def fmt_ms(row: dict[str, Any], key: str, width: int) -> str:
    """``row[key]`` in ``width`` columns, ``-`` when the run has no such figure."""
    value = row.get(key)
    return f"{value:>{width}.1f}" if value is not None else f"{'-':>{width}}"


def worker_columns(lag_dir: Path | None, start: float, end: float) -> dict[str, Any]:
    """The worst figures over gateway A's workers' loops in [start, end] (none: one process)."""
    if lag_dir is None:
        return {}
    w = workers_window(lag_dir, start, end)
    return {
        "wk_batch_ms": w["batch_ms"],
        "wk_batch_wall_ms": w["batch_wall_ms"],
        "wk_stall_ms": w["stall_ms"],
        "wk_gc_ms": w["gc_ms"],
        "wk_rss_mb": w["rss_mb"],
        "wk_probed": w["workers"],
        "wk_gc_total_ms": w["gc_total_ms"],
        "wk_gc_full": w["gc_full"],
        "wk_task": w["task"],
    }


async def phase(
    name: str,
    args: argparse.Namespace,
    lag: Path,
    pid: int,
    action: Any = None,
    lag_dir: Path | None = None,
) -> dict[str, Any]:
    start = time.time()
    cpu0 = cpu_seconds([pid])  # with its workers, in worker mode
    workers0 = cpu_seconds(child_pids(pid))
    busy0 = machine_busy_s()
    others0 = others_cpu()
    try:
        async with trio.open_nursery() as nursery:
            if action is not None:
                nursery.start_soon(action)
            result = await open_loop(
                A_HOST, 28081, HOST_HEADER, "/", rate=args.rate, seconds=args.seconds, connections=8
            )
    except* trio.TooSlowError:  # the gateway did not keep up at all: no latency figures
        result = LatencyResult((), int(args.rate * args.seconds), int(args.rate * args.seconds))
    end = time.time()
    cpu = cpu_seconds([pid]) - cpu0
    workers_cpu = cpu_seconds(child_pids(pid)) - workers0
    busy = machine_busy_s() - busy0
    others1 = others_cpu()
    consul_cpu = others1.get("consul", 0.0) - others0.get("consul", 0.0)
    row: dict[str, Any] = {
        "cpu_per_s": cpu / (end - start),
        "workers_cpu_per_s": workers_cpu / (end - start),
        "consul_cpu_per_s": consul_cpu / (end - start),
        "machine_busy_cores": busy / (end - start),
        "phase": name,
        "requests": len(result.latencies),
        "errors": result.errors,
        "p50_ms": result.quantile(0.5) * 1e3,
        "p99_ms": result.quantile(0.99) * 1e3,
        "max_ms": (result.latencies[-1] if result.latencies else float("nan")) * 1e3,
        **window(lag, start, end),
        **worker_columns(lag_dir, start, end),
    }
    gc_ms_s = row["wk_gc_total_ms"] if lag_dir is not None else row["gc_total_ms"]
    row["dp_gc_ms_per_s"] = gc_ms_s / (end - start)
    tasks = (
        workers_task_cpu(lag_dir, start, end)
        if lag_dir is not None
        else task_cpu(lag.with_name(lag.name + ".tasks"), start, end)
    )
    row["dp_task_ms_per_s"] = {n: ms / (end - start) for n, ms in tasks.items()}
    wk_rss = ",".join(str(v) for v in row.get("wk_rss_mb", {}).values()) or "-"
    print(
        f"{name:<14} {row['requests']:>6} {row['errors']:>4} {row['p50_ms']:>7.1f} "
        f"{row['p99_ms']:>7.1f} {row['max_ms']:>7.1f} {row['batch_ms']:>8.1f} "
        f"{row['batch_wall_ms']:>8.1f} {row['stall_ms']:>8.1f} {row['gc_ms']:>7.1f} "
        f"{row['rss_mb']:>6} {fmt_ms(row, 'wk_batch_ms', 8)} {fmt_ms(row, 'wk_batch_wall_ms', 8)} "
        f"{fmt_ms(row, 'wk_stall_ms', 8)} {fmt_ms(row, 'wk_gc_ms', 7)} {wk_rss:>9} "
        f"{row['cpu_per_s']:>6.2f} {row['workers_cpu_per_s']:>6.2f} "
        f"{row['consul_cpu_per_s']:>6.2f} "
        f"{row['machine_busy_cores']:>5.2f}/{os.cpu_count()} {row['dp_gc_ms_per_s']:>6.1f}  "
        f"{row['task']}"
        + (f"  || wk: {row['wk_task']}" if row.get("wk_task") else ""),
        flush=True,
    )
    return row


async def run(args: argparse.Namespace, root: Path) -> list[dict[str, Any]]:
    topo = topology(args.workers)
    built = await trio.to_thread.run_sync(build_topology, topo, root)
    a = built[0]
    if args.supervisor_nice is not None:
        text = a.config_path.read_text("utf-8")
        line = f"workers = {args.workers}\n"
        assert text.count(line) == 1, "A's [site] workers line"
        a.config_path.write_text(
            text.replace(line, f"{line}supervisor_nice = {args.supervisor_nice}\n"), "utf-8"
        )
    with a.config_path.open("a") as f:
        f.write(consul_source())
    lag = root / "lag.tsv"
    lag_dir = root / "worker-lag" if args.workers else None
    py = sys.executable
    rows: list[dict[str, Any]] = []
    control_cpus = os.sched_getaffinity(0)  # with --split: all but the last
    async with Fleet(root) as fleet:
        # ``nice`` execs the interpreter: the same pid, every thread at that priority.
        niced = ["nice", "-n", str(args.consul_nice)] if args.consul_nice else []
        consul = await fleet.start(
            "consul",
            [
                *niced,
                py,
                str(HERE / "bench" / "consul_bulk.py"),
                "--host",
                A_HOST,
                "--port",
                str(CONSUL_PORT),
                "--endpoints",
                str(args.endpoints),
                "--services",
                "500",
            ],
        )
        OTHERS["consul"] = consul.process.pid
        backend = await fleet.start("backend", service_argv("http", A_HOST, BACKEND_PORT, SITE_A))
        await wait_port(A_HOST, CONSUL_PORT, fleet=fleet, within_s=120)
        await wait_port(A_HOST, BACKEND_PORT, fleet=fleet, within_s=30)
        heap = ["--heap-budget", str(args.heap_budget)] if args.heap_budget is not None else []
        if args.decoder is not None:
            heap += ["--decoder", args.decoder]
        if args.snapshot_coalesce is not None:
            heap += ["--snapshot-coalesce", str(args.snapshot_coalesce)]
        gw_a = [
            py,
            str(HERE / "bench" / "lag_probe.py"),
            str(lag),
            *(["--worker-lag", str(lag_dir)] if lag_dir is not None else []),
            *heap,
            *gateway_argv(a.config_path)[1:],
            "--log-level",
            "warning",
        ]
        b_argv = [
            py,
            str(HERE / "bench" / "peer_site.py"),
            "--root",
            str(root),
            "--site",
            SITE_B,
            "--address",
            B_HOST,
            "--port",
            str(topo.east_west_port),
            "--peer",
            f"{SITE_A}={A_HOST}:{topo.east_west_port}:{a.site.gateway_id}",
            "--endpoints",
            str(args.endpoints),
        ]
        child_b = await fleet.start("gateway-b", b_argv)
        child_a = await fleet.start("gateway-a", gw_a)
        if args.pin:  # A alone on the last core; this process and the rest on the others
            last = max(os.sched_getaffinity(0))
            os.sched_setaffinity(child_a.process.pid, {last})
        base_a = f"http://{A_HOST}:{topo.admin_port}"
        services = 1 + 500 + args.endpoints // 10
        t0 = time.perf_counter()
        await wait_routes(fleet, base_a, services, READY_S)
        print(f"# ready after {time.perf_counter() - t0:.0f}s; {rss_line(child_a.process.pid)}")
        if args.workers:
            await wait_workers(child_a.process.pid, args.workers, fleet)
        if lag_dir is not None:
            await wait_worker_probes(child_a.process.pid, lag_dir, fleet)
        if args.pin:  # every thread of A's processes, the workers' too (affinity is per thread)
            pin_threads([child_a.process.pid, *child_pids(child_a.process.pid)], {last})
        if args.split:  # the data path's processes (and this client) on the last core
            data_cpu = {args.data_cpu}
            data_pids = [*child_pids(child_a.process.pid), backend.process.pid, os.getpid()]
            pin_threads(data_pids, data_cpu)
            print(f"# split: workers, backend and load client on CPU {data_cpu}; the rest not")
        await trio.sleep(3.0)
        print(
            f"{'phase':<14} {'reqs':>6} {'errs':>4} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7} "
            f"{'stall ms':>8} {'wall ms':>8} {'step ms':>8} {'gc ms':>7} {'RSS MB':>6} "
            f"{'wk stall':>8} {'wk wall':>8} {'wk step':>8} {'wk gc':>7} {'wk RSS MB':>9} "
            f"{'CPU/s':>6} {'wk/s':>6} {'cons/s':>6} {'busy':>7} {'gc/s':>6}  "
            "task of the longest step | tasks of the longest batch (ms)",
            flush=True,
        )
        rows.append(await phase("baseline", args, lag, child_a.process.pid, lag_dir=lag_dir))
        if args.burn is not None:  # the reference: as much CPU, no catalog change at all

            async def burn() -> None:
                # It would stop by itself a little after the phase (a bound if this run dies);
                # stopped here at the phase's end, so that its exit is no failure.
                argv = [py, str(HERE / "bench" / "burner.py"), "--seconds", str(args.seconds + 5)]
                burner = await fleet.start("burner", [*argv, "--duty", str(args.burn)])
                if args.split:
                    pin_threads([burner.process.pid], control_cpus)
                await trio.sleep(args.seconds)
                await fleet.stop(burner)

            rows.append(await phase("burn", args, lag, child_a.process.pid, burn, lag_dir=lag_dir))

        async def resync() -> None:
            await trio.sleep(1.0)
            os.kill(consul.process.pid, signal.SIGUSR1)

        rows.append(
            await phase("consul-resync", args, lag, child_a.process.pid, resync, lag_dir=lag_dir)
        )
        await fleet.stop(child_b)
        await trio.sleep(2.0)
        b_started = trio.Event()

        async def restart_b() -> None:
            await trio.sleep(0.5)
            b2 = await fleet.start("gateway-b2", b_argv)
            if args.split:  # started from this process, on the data path's core: move it back
                pin_threads([b2.process.pid], control_cpus)
            b_started.set()

        longer = argparse.Namespace(**{**vars(args), "seconds": max(args.seconds, args.peer_s)})
        rows.append(
            await phase(
                "peer-snapshot", longer, lag, child_a.process.pid, restart_b, lag_dir=lag_dir
            )
        )
        await wait_routes(fleet, base_a, services, 120)  # the snapshot did arrive
        # The same as the baseline, but in the state the churn starts from (after a resync and
        # a peer's return): the churn's own reference.
        rows.append(await phase("quiet", args, lag, child_a.process.pid, lag_dir=lag_dir))
        os.kill(consul.process.pid, signal.SIGUSR2)
        try:
            rows.append(await phase("churn", args, lag, child_a.process.pid, lag_dir=lag_dir))
        finally:
            os.kill(consul.process.pid, signal.SIGUSR2)
        await trio.sleep(2.0)
        took: dict[str, tuple[float, float, int]] = {}

        async def admin() -> None:
            await read_admin(A_HOST, topo.admin_port, took)

        rows.append(await phase("admin", args, lag, child_a.process.pid, admin, lag_dir=lag_dir))
        for path, (t0, t1, size) in took.items():
            w = window(lag, t0, t1)
            wk = (
                ""
                if lag_dir is None
                else f"  workers' stall {workers_window(lag_dir, t0, t1)['batch_ms']:7.1f} ms"
            )
            print(
                f"#   {path:<9} {t1 - t0:6.2f} s {size / 2**20:6.1f} MiB  "
                f"stall {w['batch_ms']:7.1f} ms  step {w['stall_ms']:7.1f} ms{wk}  | {w['task']}",
                flush=True,
            )
        print(f"# {rss_line(child_a.process.pid)}", flush=True)
    return rows


def print_task_cpu(base: dict[str, Any], churn: dict[str, Any], top: int = 10) -> None:
    """Where the data path's loops spent their CPU, baseline against churn: the task names
    whose CPU grew most (ms per second of the phase, all workers together)."""
    was, now = base["dp_task_ms_per_s"], churn["dp_task_ms_per_s"]
    grew = sorted(set(was) | set(now), key=lambda n: -(now.get(n, 0.0) - was.get(n, 0.0)))
    total_was, total_now = sum(was.values()), sum(now.values())
    print(
        f"# data path's loops, CPU ms/s by task, baseline -> churn (all: {total_was:.1f} -> "
        f"{total_now:.1f}): "
        + ", ".join(f"{n} {was.get(n, 0.0):.1f} -> {now.get(n, 0.0):.1f}" for n in grew[:top])
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--peer-s", type=float, default=20.0, help="length of peer-snapshot")
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--heap-budget",
        type=float,
        default=None,
        help="GC pass budget of A's heap keeper (inf: off)",
    )
    parser.add_argument(
        "--decoder", default=None, help="JSON decoder of A's Consul source (json, orjson)"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="[site] workers of gateway A (default 0: one process, as every earlier run "
        "measured, whatever the gateway's own default)",
    )
    parser.add_argument(
        "--supervisor-nice",
        type=int,
        default=None,
        help="[site] supervisor_nice of gateway A in worker mode (default: the gateway's, 10)",
    )
    parser.add_argument(
        "--worker-heap-budget",
        type=float,
        default=None,
        help="GC pass budget of the heap keeper in A's workers (default: the gateway's)",
    )
    parser.add_argument(
        "--burn",
        type=float,
        default=None,
        metavar="DUTY",
        help="add a phase 'burn' after the baseline: nothing changes, and a process beside the "
        "gateway (with --split: on the control cores) burns DUTY of a core decoding JSON; "
        "the latency any work of that size costs the data path, whoever does it",
    )
    parser.add_argument(
        "--snapshot-coalesce",
        type=float,
        default=None,
        metavar="S",
        help="how long A's supervisor gathers changes before it sends its workers a step "
        "(default: the gateway's, 0.02)",
    )
    parser.add_argument(
        "--consul-nice",
        type=int,
        default=0,
        metavar="N",
        help="run the Consul stand-in at nice N (0..19): a Consul that does not compete with "
        "the data path for the 2 cores at the workers' priority, as one on other machines "
        "does not compete at all",
    )
    parser.add_argument("--keep", action="store_true")
    parser.add_argument(
        "--split",
        action="store_true",
        help="with --workers: gateway A's workers, the backend and the load client on the last "
        "CPU; its supervisor, the Consul stand-in and site B on the others (a data path with a "
        "core of its own, as where Consul runs elsewhere and the control plane has its cpuset)",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="gateway A alone on the last CPU (with --workers: its supervisor and workers, "
        "every thread), the load client and the other servers on the others (other "
        "processes of the machine still run anywhere)",
    )
    args = parser.parse_args()
    if not 0 <= args.consul_nice <= 19:
        parser.error("--consul-nice must be 0..19")
    if not 0 <= args.workers <= 64:
        parser.error("--workers must be 0..64")
    if args.supervisor_nice is not None and not (args.workers and 0 <= args.supervisor_nice <= 19):
        parser.error("--supervisor-nice needs --workers N (N >= 1) and a value in 0..19")
    if args.split and (args.pin or not args.workers):
        parser.error("--split needs --workers N and excludes --pin")
    if args.split:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--split needs at least two CPUs")
        os.sched_setaffinity(0, set(cpus[:-1]))  # every child starts on the control cores
        args.data_cpu = cpus[-1]
    if args.pin:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) < 2:
            raise SystemExit("--pin needs at least two CPUs")
        os.sched_setaffinity(0, set(cpus[:-1]))  # inherited by every child started later
    if args.worker_heap_budget is not None:
        if not args.workers:
            parser.error("--worker-heap-budget needs --workers N")
        os.environ["ISTHMUS_BENCH_WORKER_HEAP_BUDGET"] = str(args.worker_heap_budget)
    with tempfile.TemporaryDirectory(prefix="isthmus-stall-") as tmp:
        root = Path(tmp)
        try:
            rows = trio.run(run, args, root)
        except BenchError as exc:
            print(f"setup error: {exc}", file=sys.stderr)
            raise SystemExit(2) from None
        finally:
            if args.keep:
                import shutil

                keep = Path(f"/tmp/isthmus-stall-{os.getpid()}")
                shutil.copytree(root, keep)
                print(f"# kept {keep}")
    base = next(r for r in rows if r["phase"] == "baseline")
    for r in rows:
        r["p99_vs_baseline"] = r["p99_ms"] / base["p99_ms"] if base["p99_ms"] else float("nan")
    churn = next(r for r in rows if r["phase"] == "churn")
    supervisor = max(r["batch_ms"] for r in rows)
    if args.workers:  # the data path runs in the workers
        worst = max(r["wk_batch_ms"] for r in rows)
        where = f"the workers' loops; the supervisor's {supervisor:.1f} ms"
    else:
        worst, where = supervisor, "the gateway's one loop"
    print(
        f"# worst loop stall on the data path {worst:.1f} ms (target <= 50; {where}); churn p99 "
        f"{churn['p99_vs_baseline']:.2f} x baseline (target <= 1.5)"
    )
    quiet = next(r for r in rows if r["phase"] == "quiet")
    print(
        f"# churn p99 {churn['p99_ms'] / quiet['p99_ms']:.2f} x the quiet phase's right before "
        "it (nothing changes, the state the churn starts from)"
    )
    print_task_cpu(base, churn)
    burned = next((r for r in rows if r["phase"] == "burn"), None)
    if burned is not None:
        print(f"# burn p99 {burned['p99_vs_baseline']:.2f} x baseline (no catalog change)")
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=1))
    raise SystemExit(0 if worst <= 50 and churn["p99_vs_baseline"] <= 1.5 else 1)


if __name__ == "__main__":
    main()
