"""Topology C: two Isthmus sites (two gateway processes linked over mTLS) in front of the backend.

Built with the demo's own machinery (``gateway.demo.topology`` / ``gateway.demo.runner``):
site ``bencha`` and site ``benchb``, each with its own trust domain and development CA.  The
services are *declared* on the sites (static endpoints) but served by the shared C backend:

* ``web``    HTTP, on both sites (nginx listens on both site addresses): one hop when the
  caller names ``web.default.bencha.isthmus`` at site A, two hops for ``...benchb...``;
* ``webtcp`` TCP, site B: the same nginx as an opaque TCP service (1 MiB bodies over L4);
* ``iperf``  TCP, site B: the iperf3 sink (the single long stream over L4).

Site A's service ports bind ``webtcp`` and ``iperf`` of site B (pinned), so a plain TCP
client at site A crosses the L4 tunnel.  Gateways log at ``warning`` (HAProxy logs nothing).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import trio

from foundation.spiffe_id import TrustDomain
from gateway.demo.admin_client import AdminUnavailable, admin_get
from gateway.demo.runner import all_services, converged, gateway_argv
from gateway.demo.topology import (
    DemoService,
    DemoServicePort,
    DemoSite,
    Topology,
    build_topology,
)

from .backend import SMALL_PATH, BackendAddrs
from .load import probe
from .procs import BenchError, Fleet, child_pids

READY_S = 45.0
SITE_A = "bencha"
SITE_B = "benchb"


class IsthmusUnavailable(BenchError):
    """The Isthmus topology did not come up or does not route (the data plane may be missing)."""


@dataclass(frozen=True)
class IsthmusSites:
    topology: Topology
    a_host: str
    b_host: str
    pids: tuple[int, int]
    bulk_port: int  # site A's service port -> iperf.default.benchb
    web_tcp_port: int  # site A's service port -> webtcp.default.benchb

    @property
    def http_port(self) -> int:
        return self.topology.http_port

    @staticmethod
    def host_header(site: str) -> str:
        return f"web.default.{site}.isthmus"


def make_topology(
    a_host: str, b_host: str, backend: BackendAddrs, port_offset: int = 0
) -> Topology:
    """Both sites; ``port_offset`` moves every gateway port (a second copy on the same
    addresses, in front of the same backend)."""
    o = port_offset
    if a_host not in backend.http_hosts or b_host not in backend.http_hosts:
        raise BenchError("nginx must listen on both site addresses")
    if backend.tcp_alias_host != b_host or backend.iperf_host != b_host:
        raise BenchError("the TCP services must live on site B's address")
    web = DemoService("web", "http", backend.http_port)
    site_a = DemoSite(
        SITE_A, TrustDomain(f"{SITE_A}.isthmus.bench"), ipaddress.IPv4Address(a_host), (web,), 10
    )
    site_b = DemoSite(
        SITE_B,
        TrustDomain(f"{SITE_B}.isthmus.bench"),
        ipaddress.IPv4Address(b_host),
        (
            web,
            DemoService("webtcp", "tcp", backend.tcp_alias_port),
            DemoService("iperf", "tcp", backend.iperf_port),
        ),
        20,
    )
    return Topology(
        sites=(site_a, site_b),
        east_west_port=25443 + o,
        admin_port=25000 + o,
        http_port=25080 + o,
        sni_port=25444 + o,
        service_ports=(
            DemoServicePort(26001 + o, f"iperf.default.{SITE_B}.isthmus", "tcp"),
            DemoServicePort(26002 + o, f"webtcp.default.{SITE_B}.isthmus", "tcp"),
        ),
    )


def _log_tail(path: Path, lines: int = 6) -> str:
    try:
        text = path.read_text("utf-8", "replace").splitlines()[-lines:]
    except OSError:
        return "(no log)"
    return "\n    ".join(text) or "(empty log)"


def profile_path(root: Path, site: str) -> Path:
    return root / f"gateway-{site}.prof"


async def start_isthmus(
    fleet: Fleet,
    a_host: str,
    b_host: str,
    backend: BackendAddrs,
    root: Path,
    *,
    profile: bool = False,
    limits: dict[str, int | float | str] | None = None,
    port_offset: int = 0,
    extra: str = "",
    name: str = "gateway",
    workers: int = 0,
) -> IsthmusSites:
    """Build and start both sites; return once a two-hop request through them answers 200.

    ``limits``: ``[limits]`` keys (``h2_stream_window = 1048576``...) for both gateways.
    ``profile``: run each gateway under cProfile (written to :func:`profile_path` when the
    gateway exits on SIGTERM); it slows the gateways, so figures of such a run are not results.
    ``port_offset``, ``extra`` (config text appended, ``{dir}``: the site's directory) and
    ``name`` (of the processes) make a second copy (``bench_dataplane.py --observe``).
    ``workers``: ``[site] workers`` of both gateways, written out: 0 (one process per site,
    the figures every earlier run measured and what compares with HAProxy's ``nbthread 1``)
    unless a worker-mode copy asks for more, whatever the gateway's own default (``auto``).
    In worker mode the pids returned are the supervisors', and the CPU figures of
    :func:`.procs.cpu_seconds` add their live descendants: a target pays for its workers.
    """
    topology = make_topology(a_host, b_host, backend, port_offset)
    # Always written: the gateway's own default (auto) depends on the machine.
    topology = replace(
        topology, sites=tuple(replace(site, workers=workers) for site in topology.sites)
    )
    built = await trio.to_thread.run_sync(build_topology, topology, root)
    if extra:
        for site in built:
            with site.config_path.open("a", encoding="utf-8") as f:
                f.write(extra.format(dir=site.directory))
    if limits:  # tuning experiments: a [limits] table appended to every gateway's config
        table = "\n[limits]\n" + "".join(f"{k} = {v!r}\n" for k, v in limits.items())
        for site in built:
            with site.config_path.open("a", encoding="utf-8") as f:
                f.write(table)
    children = []
    for site in built:
        argv = [*gateway_argv(site.config_path), "--log-level", "warning"]
        if profile:
            out = str(profile_path(root, site.site.name))
            argv[1:1] = ["-m", "cProfile", "-o", out]  # python -m cProfile -o F -m gateway.cli
        children.append(await fleet.start(f"{name}-{site.site.name}", argv))
    sites = IsthmusSites(
        topology,
        a_host,
        b_host,
        (children[0].process.pid, children[1].process.pid),
        topology.service_ports[0].port,
        topology.service_ports[1].port,
    )

    def logs() -> str:
        return "\n  ".join(f"{c.log_path}:\n    {_log_tail(c.log_path)}" for c in children)

    if workers:  # a worker-mode figure measured without its workers would be a wrong figure
        await _wait_workers(fleet, [c.process.pid for c in children], workers, logs)
    try:
        await _federated(fleet, topology, [str(site.site.address) for site in built])
    except BenchError as exc:
        raise IsthmusUnavailable(f"the two sites did not federate: {exc}\n  {logs()}") from None
    last = ""
    with trio.move_on_after(READY_S):
        for _ in range(10_000):
            fleet.check_alive()
            try:
                status, _ = await probe(
                    a_host, topology.http_port, sites.host_header(SITE_B), SMALL_PATH
                )
            except BenchError as exc:
                last = str(exc)
            else:
                if status == 200:
                    return sites
                last = f"status {status}"
            await trio.sleep(0.2)
    raise IsthmusUnavailable(
        f"no 200 from http://{a_host}:{topology.http_port}{SMALL_PATH} with Host: "
        f"{sites.host_header(SITE_B)} within {READY_S}s (last: {last}).\n  {logs()}"
    )


async def _wait_workers(
    fleet: Fleet, pids: list[int], workers: int, logs: Callable[[], str]
) -> None:
    """Wait until every gateway in ``pids`` runs ``workers`` worker processes (IsthmusUnavailable
    after READY_S)."""
    with trio.move_on_after(READY_S):
        while any(len(child_pids(pid)) != workers for pid in pids):
            fleet.check_alive()
            await trio.sleep(0.2)
        return
    counts = {pid: len(child_pids(pid)) for pid in pids}
    raise IsthmusUnavailable(
        f"gateways (pid: workers) {counts}, wanted {workers} workers each\n  {logs()}"
    )


async def _federated(fleet: Fleet, topology: Topology, hosts: list[str]) -> None:
    """Wait until every gateway's /routes lists every service at every site (BenchError if
    not within READY_S); a gateway that exits meanwhile fails the wait at once."""
    ready = converged(all_services(topology), len(hosts))
    last: object = None
    with trio.move_on_after(READY_S):
        for host in hosts:
            for _ in range(100_000):
                fleet.check_alive()
                try:
                    last = await admin_get(f"http://{host}:{topology.admin_port}", "/routes")
                except AdminUnavailable as exc:
                    last = exc
                else:
                    if ready(last):
                        break
                await trio.sleep(0.2)
        return
    raise BenchError(f"routes incomplete after {READY_S}s; last /routes answer: {last!r}")
