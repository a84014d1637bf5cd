#!/usr/bin/env python3
"""CPU per request at the calling gateway of a 2-replica peer site against a 1-replica one,
same run.

Two copies of one topology (real gateway processes: site ``a`` -> link -> site ``b`` -> the
whoami service ``api``), identical but for site ``b``:

* ``1-replica``  ``b`` is one gateway; ``a``'s ``[[peers]]`` names it by ``address``/``port``;
* ``2-replica``  ``b`` is two gateways (same site name and trust domain, each its own SVID
                 and its own ``api`` endpoint); ``a`` names both in ``addresses``, links to
                 each and spreads the requests over them (docs/replicas.md);
* ``2-config-1-up``  ``a`` names two replicas, only the first runs: the replica bookkeeping
                 without the spreading (requests take the one live replica's link).

A keep-alive HTTP/1.1 client sends the same number of requests through each copy's ``a``, in
rounds that alternate the order; the figure is ``a``'s CPU (``/proc/<pid>/stat``) per
request, median over rounds, as a ratio to ``1-replica``.  ``b``'s CPU (both replicas
together in ``2-replica``) is printed beside it.

    .venv/bin/python scripts/bench_replicas.py                  # ~1 minute
    .venv/bin/python scripts/bench_replicas.py --requests 5000 --rounds 5

Only loopback addresses (127.0.61.1 - 127.0.66.2); every process it starts is stopped by PID.
"""

from __future__ import annotations

import argparse
import ipaddress
import statistics
import sys
import timeit
from dataclasses import replace
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

import trio  # noqa: E402
from bench.keepalive import API, Copy, run_bench, run_requests, wait_ready  # noqa: E402
from bench.procs import Fleet, cpu_seconds  # noqa: E402

from foundation.spiffe_id import SpiffeId, TrustDomain  # noqa: E402
from gateway.demo.runner import gateway_argv, service_argv  # noqa: E402
from gateway.demo.topology import (  # noqa: E402
    DemoService,
    DemoSite,
    Topology,
    build_topology,
    gateway_config_text,
)
from overlay.identity.ca import issue_svid  # noqa: E402

API_PORT = 18097
EW_PORT = 15443


async def start_copy(
    fleet: Fleet, root: Path, name: str, *, subnet: int, replicas: int, running: int
) -> tuple[Copy, list[int]]:
    """One copy; (the copy with ``a``'s PID, the PIDs of ``b``'s gateways)."""
    sites = tuple(
        DemoSite(
            name=site,
            trust_domain=TrustDomain(f"{site}.bench-replicas.test"),
            address=ipaddress.IPv4Address(f"127.0.{subnet + i}.1"),
            services=(DemoService("api", "http", API_PORT),) if site == "b" else (),
            priority=10 * (i + 1),
            workers=0,  # one process, as the figures in the README were measured
        )
        for i, site in enumerate(("a", "b"))
    )
    topology = Topology(sites=sites, ping_interval_s=1.0, ping_timeout_s=2.0)
    directory = (root / name).resolve()
    built = {
        b.site.name: b for b in await trio.to_thread.run_sync(build_topology, topology, directory)
    }
    b_site = built["b"].site
    b_configs = [(b_site, built["b"].config_path)]
    if replicas == 2:
        second = replace(b_site, address=ipaddress.IPv4Address(int(b_site.address) + 1))
        ident = directory / "b2" / "identity"
        ca_dir = directory / "ca" / b_site.trust_domain.name
        await trio.to_thread.run_sync(issue_svid, ca_dir, b_site.gateway_id, ident)
        text = gateway_config_text(topology, second, directory)
        text = text.replace(str(directory / "b" / "identity"), str(ident))
        config = directory / "b2" / "gateway.toml"
        config.write_text(text, "utf-8")
        b_configs.append((second, config))
        a_config = built["a"].config_path
        one = f'address = "{b_site.address}"\nport = {EW_PORT}\n'
        both = f'addresses = ["{b_site.address}:{EW_PORT}", "{second.address}:{EW_PORT}"]\n'
        a_text = a_config.read_text("utf-8")
        assert a_text.count(one) == 1
        a_config.write_text(a_text.replace(one, both), "utf-8")
    a = await fleet.start(
        f"{name}-a", [*gateway_argv(built["a"].config_path), "--log-level", "warning"]
    )
    b_pids = []
    for i, (site, config) in enumerate(b_configs[:running]):
        child = await fleet.start(f"{name}-b{i}", [*gateway_argv(config), "--log-level", "warning"])
        b_pids.append(child.process.pid)
        argv = service_argv("http", str(site.address), API_PORT, f"b{i}")
        await fleet.start(f"{name}-b{i}-api", argv)
    copy = Copy(name, str(sites[0].address), topology.http_port, [a.process.pid])
    return await wait_ready(copy, API, fleet=fleet), b_pids


async def bench(args: argparse.Namespace, root: Path) -> dict[str, list[float]]:
    names = ("1-replica", "2-replica", "2-config-1-up")
    shapes = {"1-replica": (1, 1), "2-replica": (2, 2), "2-config-1-up": (2, 1)}
    results: dict[str, list[float]] = {n: [] for n in names}
    results.update({f"{n} b": [] for n in names})
    async with Fleet(root / "logs") as fleet:
        copies = [
            await start_copy(
                fleet, root, n, subnet=61 + 2 * i, replicas=shapes[n][0], running=shapes[n][1]
            )
            for i, n in enumerate(names)
        ]
        await trio.sleep(3.0)  # both replicas linked (the 2-replica copy's second one too)
        for copy, _b in copies:
            await run_requests(copy, API, min(300, args.requests), args.connections)
        for r in range(args.rounds):
            order = copies[r % len(copies) :] + copies[: r % len(copies)]
            for copy, b_pids in order:
                before, b_before = cpu_seconds(copy.pids), cpu_seconds(b_pids)
                done = await run_requests(copy, API, args.requests, args.connections)
                per = (cpu_seconds(copy.pids) - before) / done * 1e6
                b_per = (cpu_seconds(b_pids) - b_before) / done * 1e6
                results[copy.name].append(per)
                results[f"{copy.name} b"].append(b_per)
                print(
                    f"round {r + 1} {copy.name:13s} {done} requests, a {per:7.1f} us CPU/request,"
                    f" b {b_per:7.1f} us"
                )
    return results


class _Conn:
    """Stands in for a live client connection (what the replica choice reads of one)."""

    is_closing = False
    stream_room = (3, 100)


def micro() -> dict[str, float]:
    """Microseconds per request of the replica choice alone (this process): picking the
    opener of a 2-replica site (``Peering.outbound``'s work: each replica's live link, the
    suspect check, the set) and the pick inside ``open_stream``, against a 1-replica site's
    ``PeerLinks.outbound``."""
    from overlay.peering.config import PeerSpec
    from overlay.peering.links import PeerLinks
    from overlay.peering.replica_set import replica_load
    from overlay.peering.replicas import is_suspect, pick_replica

    spec = PeerSpec("b", "127.0.0.1", 1, SpiffeId.parse("spiffe://b.test/gw"))
    states = [PeerLinks(spec), PeerLinks(spec)]
    for st in states:
        st.dialed = st.dialed_client = _Conn()  # type: ignore[assignment]

    def one() -> object:
        return states[0].outbound()

    def two() -> object:
        live = [(st, c) for st in states if (c := st.outbound()) is not None]
        suspect = [is_suspect(st.link_lost_at, 5.0, 3.0) or st.losing_link() for st, _ in live]
        loads = [replica_load(c, s) for (_st, c), s in zip(live, suspect, strict=True)]  # type: ignore[arg-type]
        return pick_replica(loads, 7)

    n = 100_000
    out = {}
    for name, fn in (("1-replica outbound", one), ("2-replica outbound + pick", two)):
        out[name] = min(timeit.repeat(fn, number=n, repeat=5)) / n * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    results = run_bench("bench_replicas", __doc__, bench, argv, requests=3000, connections=8)
    if results is None:
        return 2
    ref = statistics.median(results["1-replica"])
    b_ref = statistics.median(results["1-replica b"])
    print("\nmedian CPU per request (a: the calling gateway; b: site b's gateways together):")
    for name in ("1-replica", "2-replica", "2-config-1-up"):
        med = statistics.median(results[name])
        b_med = statistics.median(results[f"{name} b"])
        a_part = f"a {med:7.1f} us ({med / ref:5.3f}x)"
        print(f"  {name:13s} {a_part}   b {b_med:7.1f} us ({b_med / b_ref:5.3f}x)")
    print("the replica choice alone, timed in this process (per request, against a's 1-replica):")
    for name, us in micro().items():
        print(f"  {name:26s} {us:6.2f} us  ({100 * us / ref:.2f} % of {ref:.1f} us)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
