#!/usr/bin/env python3
"""Many sites on one machine: federation convergence, memory and idle CPU per peer, against N.

For each N of ``--sites`` (in order), N real gateway processes (``isthmus run``) start on
loopback addresses 127.<block>.<i>.1, each its own trust domain with a development CA and SVID
(``gateway.demo.topology``), a few static services, and a full mesh of peers (``--shape hub``:
one hub peered with every other site).  Measured in the same run, per N:

* startup: from the first spawn until every ``/healthz`` says ok, and until every site's
  ``/routes`` lists every peer's services (the federation converged);
* one change: a service added at one site by a config reload (``POST /config/reload``), until
  every peer's ``/routes`` lists it -- median and max over the sites, over ``--rounds`` rounds;
* per gateway: RSS, open file descriptors, threads, links and open HTTP/2 streams (at rest
  these are the federation streams), from ``/proc`` and ``/links``;
* the CPU seconds all gateways spend in an idle window of ``--idle`` seconds (PINGs and
  federation keepalive, nothing else runs), per gateway and per peer.

Across N, least-squares lines give the growth per peer (bytes of RSS, fds, idle CPU).
Times are upper bounds: the admin APIs are polled (``--poll-concurrency`` at a time), and the
median gap between a site's last "not yet" and its first "yes" is printed as the resolution.

Every process is a child of this script and is stopped by PID when a size ends, on an error,
on the ``--deadline`` or on Ctrl-C.  Traffic goes to loopback only.

    .venv/bin/python scripts/bench_sites.py --sites 5,10,25,50           # a few minutes
    .venv/bin/python scripts/bench_sites.py --sites 3 --rounds 2 --idle 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

from gateway.demo.admin_client import AdminUnavailable, admin_get
from gateway.demo.preflight import PortUnavailable, check_binds, planned_binds
from gateway.demo.runner import gateway_argv
from gateway.demo.topology import DemoService, Topology, build_topology, gateway_config_text
from scripts.bench.procs import BenchError, Fleet, cpu_seconds
from scripts.bench.sites_plan import (
    RSS_GUESS,
    MachineLimits,
    PeeringKnobs,
    Shape,
    address_of,
    expected_routes,
    fits,
    limit_problems,
    make_sites_topology,
    missing_routes,
    patch_peering,
    peer_map,
    report,
    site_view,
    with_service,
)

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def machine_limits() -> MachineLimits:
    low, high = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    meminfo = dict(
        line.split(":", 1) for line in Path("/proc/meminfo").read_text().splitlines() if ":" in line
    )
    available = int(meminfo["MemAvailable"].split()[0]) * 1024
    uid = os.getuid()
    processes = sum(
        1 for e in os.listdir("/proc") if e.isdigit() and _owner(Path("/proc", e)) == uid
    )
    return MachineLimits(
        nofile=resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        port_range=(low, high),
        mem_available=available,
        max_processes=resource.getrlimit(resource.RLIMIT_NPROC)[0],
        processes=processes,
    )


def _owner(path: Path) -> int:
    try:
        return path.stat().st_uid
    except OSError:
        return -1


def proc_figures(pid: int) -> dict[str, int]:
    """RSS (bytes), threads and open file descriptors of one process, from /proc."""
    status = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return {
        "rss": int(status["VmRSS"].split()[0]) * 1024,
        "threads": int(status["Threads"]),
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
    }


def _post(url: str, timeout: float) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=b"", method="POST")
    try:
        with _OPENER.open(request, timeout=timeout) as response:
            return response.status, json.loads(response.read(1 << 20))
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(1 << 16).decode("utf-8", "replace")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise AdminUnavailable(f"{url}: {exc}") from exc


async def sweep(
    urls: Mapping[str, str],
    path: str,
    done: Callable[[str, Any], bool],
    *,
    t0: float,
    within_s: float,
    limiter: trio.CapacityLimiter,
    alive: Callable[[], None] = lambda: None,
    describe: Callable[[str, Any], str] = lambda site, doc: repr(doc)[:200],
) -> dict[str, tuple[float, float]]:
    """Poll ``path`` of every site until ``done(site, doc)``: site -> (sent time of its last
    "not yet", arrival of its first "yes"), seconds after ``t0``.  BenchError after
    ``within_s`` naming the sites still waiting."""
    pending = set(urls)
    last_no = dict.fromkeys(urls, 0.0)
    last_doc: dict[str, Any] = {}
    result: dict[str, tuple[float, float]] = {}

    async def one(site: str) -> None:
        async with limiter:
            sent = time.monotonic() - t0
            try:
                doc = await admin_get(urls[site], path, request_timeout_s=5.0)
            except AdminUnavailable as exc:
                doc = exc
        if not isinstance(doc, AdminUnavailable) and done(site, doc):
            result[site] = (last_no[site], time.monotonic() - t0)
            pending.discard(site)
        else:
            last_no[site], last_doc[site] = sent, doc

    with trio.move_on_after(within_s):
        while pending:
            alive()
            async with trio.open_nursery() as nursery:
                for site in sorted(pending):
                    nursery.start_soon(one, site)
            if pending:
                await trio.sleep(0.02)
        return result
    waiting = sorted(pending)
    details = "; ".join(f"{s}: {describe(s, last_doc.get(s))}" for s in waiting[:3])
    raise BenchError(
        f"{path}: {len(waiting)} of {len(urls)} sites not done within {within_s:g}s "
        f"({', '.join(waiting[:10])}); {details}"
    )


async def change_round(
    url: str,
    targets: Mapping[str, str],
    site: str,
    address: str,
    *,
    within_s: float,
    limiter: trio.CapacityLimiter,
    alive: Callable[[], None],
) -> tuple[float, dict[str, tuple[float, float]]]:
    """Reload ``site`` (its config already names the new service at ``address``) and poll
    ``targets`` until each routes ``address`` to ``site``: (the reload's answer time, the
    sweep's brackets), both from the moment the reload was sent."""
    start = time.monotonic()
    got: dict[str, tuple[float, float]] = {}

    def arrived(_: str, doc: Any) -> bool:
        return site in (doc.get("routes", {}).get(address) or ())

    async def spread() -> None:
        got.update(
            await sweep(
                targets, "/routes", arrived,
                t0=start, within_s=within_s, limiter=limiter, alive=alive,
            )
        )  # fmt: skip

    # Polling starts with the reload, so a peer that has the change before the reload's
    # answer arrives is seen then, not one poll after it.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(spread)
        status, answer = await trio.to_thread.run_sync(_post, url + "/config/reload", 60.0)
        took = time.monotonic() - start
        if status != 200:
            raise BenchError(f"reload of {site} answered {status}: {answer}")
    return took, got


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def config_text(
    topology: Topology, site: str, peers: Sequence[str], root: Path, args: argparse.Namespace
) -> str:
    view = site_view(topology, site, peers, dial=args.dial)
    knobs = PeeringKnobs(args.connect_timeout, args.backoff_base, args.backoff_cap)
    return patch_peering(gateway_config_text(view, view.sites[0], root), knobs)


def write_configs(
    topology: Topology, peers: Mapping[str, Sequence[str]], root: Path, args: argparse.Namespace
) -> None:
    for name, others in peers.items():
        text = config_text(topology, name, others, root, args)
        (root / name / "gateway.toml").write_text(text, "utf-8")


LOG_SIGNS = {
    "handshake_timeouts": "TLS handshake with",
    "ping_timeouts": "PING unanswered",
    "dial_failures": "cannot link to",
}


def _rss_of(pids: Iterable[int]) -> list[int]:
    out = []
    for pid in pids:
        try:
            out.append(proc_figures(pid)["rss"])
        except OSError:
            continue  # exited: the caller reports that separately
    return out


async def diagnose(
    urls: Mapping[str, str], pids: Mapping[str, int], logs: Path, limiter: trio.CapacityLimiter
) -> dict[str, Any]:
    """Why a size did not converge: peers each site has a link to, RSS, and how often the logs
    name handshake timeouts, unanswered PINGs and failed dials (per gateway, medians)."""
    up: list[int] = []

    async def one(site: str) -> None:
        async with limiter:
            try:
                doc = await admin_get(urls[site], "/links", request_timeout_s=5.0)
            except AdminUnavailable:
                return
        up.append(sum(1 for p in doc.values() if p["up"]))

    with trio.move_on_after(30):
        async with trio.open_nursery() as nursery:
            for site in urls:
                nursery.start_soon(one, site)
    counts: dict[str, list[int]] = {k: [] for k in LOG_SIGNS}
    for site in urls:
        text = (logs / f"{site}.log").read_text("utf-8", "replace")
        for key, sign in LOG_SIGNS.items():
            counts[key].append(text.count(sign))
    rss = _rss_of(pids.values())
    return {
        "links_answered": len(up),
        "peers_up_median": _median(up),
        "peers_up_min": min(up, default=None),
        "rss_median": _median(rss),
        **{f"{k}_median": _median(v) for k, v in counts.items()},
    }


async def run_size(
    full: Topology, n: int, shape: Shape, root: Path, args: argparse.Namespace
) -> dict[str, Any]:
    topology = replace(full, sites=full.sites[:n])
    names = [s.name for s in topology.sites]
    peers = peer_map(names, shape)
    peers_max = max((len(p) for p in peers.values()), default=0)
    problems = limit_problems(n, peers_max, machine_limits(), args.rss_guess_mib * 2**20)
    if problems:
        raise BenchError(f"{n} sites cannot start here:\n  " + "\n  ".join(problems))
    try:
        check_binds(planned_binds(topology))
    except PortUnavailable as exc:
        raise BenchError(str(exc)) from None
    write_configs(topology, peers, root, args)
    urls = {s.name: f"http://{s.address}:{topology.admin_port}" for s in topology.sites}
    limiter = trio.CapacityLimiter(args.poll_concurrency)
    row: dict[str, Any] = {"sites": n, "shape": shape, "dial": args.dial, "peers_max": peers_max}
    logs = root / f"logs-{n}"

    async with Fleet(logs) as fleet:
        t0 = time.monotonic()
        # With one dialer per pair (the lower name), the highest name starts first: each new
        # gateway then dials peers already running instead of backing off from absent ones.
        for name in reversed(names) if args.dial == "one" else names:
            await fleet.start(name, gateway_argv(root / name / "gateway.toml"))
            await trio.sleep(args.stagger)
        pids = {c.name: c.process.pid for c in sorted(fleet.children, key=lambda c: c.name)}
        bound = args.startup_s + 2.0 * n
        want = expected_routes(topology, peers)
        try:
            up = await sweep(
                urls, "/healthz", lambda s, d: d.get("status") == "ok",
                t0=t0, within_s=bound, limiter=limiter, alive=fleet.check_alive,
            )  # fmt: skip
            row["up_cpu_s"] = cpu_seconds(list(pids.values()))
            conv = await sweep(
                urls, "/routes", lambda s, d: missing_routes(d, want[s]) == 0,
                t0=t0, within_s=bound, limiter=limiter, alive=fleet.check_alive,
                describe=lambda s, d: f"{missing_routes(d, want[s])} routes missing" if d else "-",
            )  # fmt: skip
        except BenchError as exc:
            row["error"] = str(exc)
            row["startup_cpu_s"] = cpu_seconds(list(pids.values()))
            row["diagnosis"] = await diagnose(urls, pids, logs, limiter)
            return row
        row["startup_cpu_s"] = cpu_seconds(list(pids.values()))
        row["federation_cpu_s"] = row["startup_cpu_s"] - row["up_cpu_s"]
        all_up = max(t for _, t in up.values())
        row["up_s"] = all_up
        row["converged_s"] = max(t for _, t in conv.values())
        row["converged_after_up_s"] = row["converged_s"] - all_up
        row["startup_resolution_s"] = _median([b - a for a, b in conv.values()])
        row["diagnosis"] = await diagnose(urls, pids, logs, limiter)

        await trio.sleep(args.settle)
        fleet.check_alive()
        figures = {name: proc_figures(pid) for name, pid in pids.items()}
        links = {name: await admin_get(urls[name], "/links") for name in names}
        per = [
            {
                "site": name,
                "peers": len(peers[name]),
                **figures[name],
                "links": sum(len(p["links"]) for p in links[name].values()),
                "peers_up": sum(1 for p in links[name].values() if p["up"]),
                "streams": sum(p["open_streams"] for p in links[name].values()),
            }
            for name in names
        ]

        cpu0 = cpu_seconds(list(pids.values()))
        w0 = time.monotonic()
        await trio.sleep(args.idle)
        cpu = cpu_seconds(list(pids.values())) - cpu0
        window = time.monotonic() - w0
        fleet.check_alive()
        pairs = sum(len(p) for p in peers.values())
        row["idle_cpu_cores"] = cpu / window
        row["idle_cpu_ms_per_s_per_peer"] = 1000 * cpu / window / pairs if pairs else None

        current = topology
        arrivals: list[float] = []
        maxima: list[float] = []
        gaps: list[float] = []
        reloads: list[float] = []
        for r in range(args.rounds):
            site = names[0] if shape == "hub" else names[(1 + 7 * r) % n]
            service = DemoService(f"chg{r}", "http", 19000 + r)
            current = with_service(current, site, service)
            (root / site / "gateway.toml").write_text(
                config_text(current, site, peers[site], root, args), "utf-8"
            )
            address = address_of(service, topology.mesh_domain)
            targets = {p: urls[p] for p in peers[site]}
            took, got = await change_round(
                urls[site], targets, site, address,
                within_s=args.change_within, limiter=limiter, alive=fleet.check_alive,
            )  # fmt: skip
            reloads.append(took)
            times = [t for _, t in got.values()]
            arrivals.append(statistics.median(times) if times else 0.0)
            maxima.append(max(times, default=0.0))
            gaps += [b - a for a, b in got.values()]
        row["reload_s"] = _median(reloads)
        row["change_median_s"] = _median(arrivals)
        row["change_max_s"] = max(maxima, default=None)
        row["change_resolution_s"] = _median(gaps)

    for key in ("rss", "fds", "threads", "links", "streams", "peers_up"):
        row[f"{key}_median"] = statistics.median(p[key] for p in per)
    row["processes"] = per
    return row


async def main(args: argparse.Namespace) -> None:
    sizes = sorted({int(x) for x in args.sites.split(",") if x.strip()})
    full = make_sites_topology(
        max(sizes),
        block=args.block,
        services_per_site=args.services,
        ping_interval_s=args.ping_interval,
        ping_timeout_s=args.ping_timeout,
        import_grace_s=args.import_grace,
    )
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-sites-") as tmp:
        root = Path(tmp)
        await trio.to_thread.run_sync(build_topology, full, root)
        with trio.fail_after(args.deadline):
            for n in sizes:
                print(f"{n} sites ({args.shape}, dial {args.dial}) ...", flush=True)
                rows.append(await run_size(full, n, args.shape, root, args))
                if "error" in rows[-1] and not args.keep_going:
                    break  # a larger size would not converge either
    fit = fits(rows)
    print(report(rows, fit), flush=True)
    if args.json is not None:
        settings = {k: v for k, v in vars(args).items() if k != "json"}
        doc = {"settings": settings, "sizes": rows, "fits": fit}
        args.json.write_text(json.dumps(doc, indent=2, default=str), "utf-8")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add = parser.add_argument
    add("--sites", default="5,10,25,50", help="site counts, comma-separated (default %(default)s)")
    add("--shape", choices=("mesh", "hub"), default="mesh")
    add("--services", type=int, default=2, help="static services per site")
    add("--rounds", type=int, default=3, help="one-change rounds per size")
    add("--idle", type=float, default=10.0, help="idle CPU window, seconds")
    add("--settle", type=float, default=3.0, help="seconds after convergence before sampling")
    add("--dial", choices=("both", "one"), default="both", help="who dials in each pair")
    add("--stagger", type=float, default=0.0, help="seconds between two gateways' spawns")
    add("--ping-interval", type=float, default=5.0)
    add("--ping-timeout", type=float, default=3.0)
    add("--import-grace", type=float, default=30.0)
    add("--connect-timeout", type=float, default=10.0, help="peering.connect_timeout_s")
    add("--backoff-base", type=float, default=0.25, help="peering.backoff_base_s")
    add("--backoff-cap", type=float, default=30.0, help="peering.backoff_cap_s")
    add("--keep-going", action="store_true", help="try larger sizes after one failed")
    add("--block", type=int, default=11, help="second octet of the sites' 127.x.y.1 addresses")
    add("--poll-concurrency", type=int, default=8, help="admin requests in flight at once")
    add("--startup-s", type=float, default=60.0, help="startup bound: this + 2 s per site")
    add("--change-within", type=float, default=60.0, help="bound on one change's spread")
    add("--deadline", type=float, default=1800.0, help="bound on the whole run, seconds")
    add("--rss-guess-mib", type=int, default=RSS_GUESS // 2**20, help="for the memory check")
    add("--json", type=Path, default=None, help="also write every figure to this JSON file")
    args = parser.parse_args(argv)
    if args.rounds < 0 or args.idle <= 0 or args.poll_concurrency < 1 or args.stagger < 0:
        parser.error("--rounds >= 0, --idle > 0, --stagger >= 0 and --poll-concurrency >= 1")
    return args


if __name__ == "__main__":
    arguments = parse_args()
    try:
        trio.run(main, arguments)
    except BenchError as exc:
        print(f"bench_sites: {exc}", file=sys.stderr)
        sys.exit(2)
    except trio.TooSlowError:
        print(f"bench_sites: the run passed --deadline {arguments.deadline:g}s", file=sys.stderr)
        sys.exit(2)
