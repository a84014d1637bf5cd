"""The pure parts of ``scripts/bench_sites.py``: topology, expected routes, limits, fits, report.

Nothing here starts a process or opens a socket, so the test suite checks these parts on their
own (``tests/scripts/test_bench_sites.py``); the script is the thin adapter that starts the
gateways, polls their admin APIs and reads ``/proc``.
"""

from __future__ import annotations

import ipaddress
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from foundation.spiffe_id import TrustDomain
from gateway.demo.topology import DemoService, DemoSite, Topology

Shape = Literal["mesh", "hub"]
Dial = Literal["one", "both"]
MAX_SITES = 250  # one /24 third octet per site: 127.<block>.<1..250>.1


def site_name(i: int) -> str:
    return f"s{i:03d}"


def make_sites_topology(
    n: int,
    *,
    block: int,
    services_per_site: int,
    ping_interval_s: float,
    ping_timeout_s: float,
    import_grace_s: float,
) -> Topology:
    """``n`` sites ``s000``.. on ``127.<block>.<i+1>.1``, each with ``services_per_site`` HTTP
    services (static endpoints only: nothing listens on their ports, which federation does not
    need), every site its own trust domain.  Ports are the demo's; the addresses differ."""
    if not 1 <= n <= MAX_SITES:
        raise ValueError(f"sites: {n} is outside 1..{MAX_SITES}")
    if not 1 <= block <= 255:
        raise ValueError(f"block: {block} is outside 1..255 (127.0.x.y is the demo's)")
    sites = tuple(
        DemoSite(
            name=site_name(i),
            trust_domain=TrustDomain(f"{site_name(i)}.sites.bench"),
            address=ipaddress.IPv4Address(f"127.{block}.{i + 1}.1"),
            services=tuple(
                DemoService(f"svc{k}", "http", 18000 + k) for k in range(services_per_site)
            ),
            priority=10 + i,
            workers=0,  # one process per site: the simulation measures many sites
        )
        for i in range(n)
    )
    return Topology(
        sites=sites,
        ping_interval_s=ping_interval_s,
        ping_timeout_s=ping_timeout_s,
        import_grace_s=import_grace_s,
    )


def peer_map(names: Sequence[str], shape: Shape) -> dict[str, tuple[str, ...]]:
    """Who peers with whom: every pair (``mesh``), or the first site with every other and the
    others with it only (``hub``; federation does not pass services on, so a spoke imports the
    hub's services only)."""
    if shape == "mesh":
        return {a: tuple(b for b in names if b != a) for a in names}
    if not names:
        return {}
    hub, spokes = names[0], tuple(names[1:])
    return {hub: spokes, **{s: (hub,) for s in spokes}}


def site_view(
    topology: Topology, site: str, peers: Sequence[str], *, dial: Dial = "both"
) -> Topology:
    """The topology as ``site``'s config sees it: itself and its peers (bundles and
    ``[[peers]]`` are generated for exactly these).  ``dial="one"``: of each pair only the
    site with the lower name dials (one link per pair instead of two, half the handshakes)."""
    by_name = {s.name: s for s in topology.sites}
    others = [by_name[p] for p in peers]
    if dial == "one":
        others = [replace(o, dial=site < o.name) for o in others]
    return replace(topology, sites=(by_name[site], *others))


@dataclass(frozen=True)
class PeeringKnobs:
    """``[peering]`` settings the generated configs fix for test speed, set per run here."""

    connect_timeout_s: float = 10.0
    backoff_base_s: float = 0.25
    backoff_cap_s: float = 30.0


def patch_peering(text: str, knobs: PeeringKnobs) -> str:
    """A generated gateway config with ``knobs`` in its ``[peering]`` table (replacing the
    demo's fast backoff); ValueError if the table is not where the generator puts it."""
    fast = "backoff_base_s = 0.2\nbackoff_cap_s = 5.0\n"
    if text.count(fast) != 1:
        raise ValueError("the generated config's [peering] backoff lines were not found")
    lines = (
        f"backoff_base_s = {knobs.backoff_base_s}\n"
        f"backoff_cap_s = {knobs.backoff_cap_s}\n"
        f"connect_timeout_s = {knobs.connect_timeout_s}\n"
    )
    return text.replace(fast, lines)


def with_service(topology: Topology, site: str, service: DemoService) -> Topology:
    """``topology`` with one more service at ``site`` (the change a round propagates)."""
    sites = tuple(
        replace(s, services=(*s.services, service)) if s.name == site else s
        for s in topology.sites
    )
    return replace(topology, sites=sites)


def address_of(service: DemoService, mesh_domain: str) -> str:
    return f"{service.service}.{service.namespace}.{mesh_domain}"


def expected_routes(
    topology: Topology, peers: Mapping[str, Sequence[str]]
) -> dict[str, dict[str, frozenset[str]]]:
    """For each site: each L7 address it must route, and the sites it must list for it (its
    own and every peer's services)."""
    by_name = {s.name: s for s in topology.sites}
    out: dict[str, dict[str, frozenset[str]]] = {}
    for site, others in peers.items():
        want: dict[str, set[str]] = {}
        for name in (site, *others):
            for svc in by_name[name].services:
                want.setdefault(address_of(svc, topology.mesh_domain), set()).add(name)
        out[site] = {a: frozenset(s) for a, s in want.items()}
    return out


def missing_routes(doc: Any, want: Mapping[str, frozenset[str]]) -> int:
    """How many (address, site) pairs of ``want`` a ``/routes`` document lacks."""
    routes = doc.get("routes", {}) if isinstance(doc, dict) else {}
    return sum(len(sites - set(routes.get(address) or ())) for address, sites in want.items())


@dataclass(frozen=True)
class MachineLimits:
    """What the machine lets N gateways use (read by the script from rlimits and /proc)."""

    nofile: int  # RLIMIT_NOFILE soft limit, inherited by each gateway and by this script
    port_range: tuple[int, int]  # net.ipv4.ip_local_port_range
    mem_available: int  # bytes, /proc/meminfo MemAvailable
    max_processes: int  # RLIMIT_NPROC soft limit (-1: unlimited)
    processes: int  # processes this user runs now


GATEWAY_BASE_FDS = 40  # listeners, epoll, log, identity files, wakeup pipes, threads' fds
FDS_PER_PEER = 2  # one dialed and one accepted link per peer (both sides dial)
BENCH_BASE_FDS = 64
RSS_GUESS = 90 * 1024 * 1024  # a gateway's RSS with a few peers; refined by the run itself


def limit_problems(n: int, peers_max: int, limits: MachineLimits, rss_guess: int) -> list[str]:
    """Why ``n`` gateways (the busiest with ``peers_max`` peers) cannot run here; [] if they can.

    Conservative by design: each gateway holds about ``FDS_PER_PEER`` sockets per peer; this
    script holds one pidfd per child plus its admin polls; every link's dialing side takes an
    ephemeral port (the kernel may reuse one towards different addresses, so counting them all
    against the range overestimates); memory is the guess times ``n`` against MemAvailable.
    """
    problems: list[str] = []
    gateway_fds = GATEWAY_BASE_FDS + FDS_PER_PEER * peers_max
    if gateway_fds > limits.nofile:
        problems.append(
            f"file descriptors: a gateway with {peers_max} peers needs about {gateway_fds}, the "
            f"limit (ulimit -n) is {limits.nofile}; raise it (ulimit -n) or use fewer sites"
        )
    bench_fds = BENCH_BASE_FDS + 2 * n
    if bench_fds > limits.nofile:
        problems.append(
            f"file descriptors: this script needs about {bench_fds} for {n} children, the limit "
            f"(ulimit -n) is {limits.nofile}"
        )
    ports = limits.port_range[1] - limits.port_range[0] + 1
    dialed = n * peers_max
    if dialed > ports:
        problems.append(
            f"ephemeral ports: up to {dialed} dialed links, net.ipv4.ip_local_port_range holds "
            f"{ports}"
        )
    need = n * rss_guess
    if need > limits.mem_available:
        problems.append(
            f"memory: {n} gateways at ~{rss_guess / 2**20:.0f} MiB need ~{need / 2**30:.1f} GiB, "
            f"{limits.mem_available / 2**30:.1f} GiB available"
        )
    if limits.max_processes >= 0 and limits.processes + n + 8 > limits.max_processes:
        problems.append(
            f"processes: {limits.processes} running + {n} gateways exceed ulimit -u "
            f"{limits.max_processes}"
        )
    return problems


def fit_line(xs: Sequence[float], ys: Sequence[float]) -> tuple[float, float] | None:
    """Least-squares ``y = slope * x + intercept``; None with fewer than two distinct x."""
    if len(xs) != len(ys) or len(set(xs)) < 2:
        return None
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx
    return slope, my - slope * mx


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def render_table(columns: Sequence[tuple[str, str]], rows: Sequence[Mapping[str, Any]]) -> str:
    """A plain text table: ``columns`` are (key, heading); missing values print as ``-``."""
    cells = [[_cell(row.get(key)) for key, _ in columns] for row in rows]
    widths = [
        max([len(head), *(len(r[i]) for r in cells)]) for i, (_, head) in enumerate(columns)
    ]
    lines = ["  ".join(head.rjust(w) for (_, head), w in zip(columns, widths, strict=True))]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


def fits(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Growth per peer across every gateway of every size: RSS, fds; idle CPU per gateway."""
    rows = [r for r in rows if "error" not in r]
    points = [p for row in rows for p in row["processes"]]
    xs = [float(p["peers"]) for p in points]
    out: dict[str, Any] = {}
    for key in ("rss", "fds", "streams", "links"):
        line = fit_line(xs, [float(p[key]) for p in points])
        out[key] = None if line is None else {"per_peer": line[0], "at_zero": line[1]}
    # x: the mean peers per gateway (every gateway's in a mesh; a hub's and its spokes' mean)
    cpu = fit_line(
        [statistics.fmean(p["peers"] for p in r["processes"]) for r in rows],
        [r["idle_cpu_cores"] / r["sites"] for r in rows],
    )
    out["idle_cpu_cores_per_gateway"] = (
        None if cpu is None else {"per_peer": cpu[0], "at_zero": cpu[1]}
    )
    return out


COLUMNS = [
    ("sites", "N"),
    ("peers_max", "peers"),
    ("up_s", "up s"),
    ("converged_s", "conv s"),
    ("converged_after_up_s", "conv-up s"),
    ("up_cpu_s", "up cpu s"),
    ("federation_cpu_s", "fed cpu s"),
    ("change_median_s", "chg med s"),
    ("change_max_s", "chg max s"),
    ("change_resolution_s", "poll res s"),
    ("reload_s", "reload s"),
    ("rss_mib", "RSS MiB"),
    ("fds_median", "fds"),
    ("threads_median", "thr"),
    ("links_median", "links"),
    ("streams_median", "streams"),
    ("idle_cpu_cores", "idle cores"),
    ("idle_cpu_ms_per_s_per_peer", "ms/s/peer"),
]


def report(rows: Sequence[Mapping[str, Any]], fit: Mapping[str, Any]) -> str:
    done = [r for r in rows if "error" not in r]
    table = render_table(COLUMNS, [{**r, "rss_mib": r["rss_median"] / 2**20} for r in done])
    lines = [table, ""]
    for r in rows:
        if "error" in r:
            d = r["diagnosis"]
            lines += [
                f"{r['sites']} sites did not converge: {r['error']}",
                f"  gateways' CPU since spawn {r['startup_cpu_s']:.0f} s; peers linked per "
                f"gateway median {d['peers_up_median']} (min {d['peers_up_min']}) of "
                f"{r['peers_max']} ({d['links_answered']} of {r['sites']} answered /links); "
                f"per gateway log: {d['handshake_timeouts_median']} handshake "
                f"timeouts, {d['ping_timeouts_median']} unanswered PINGs, "
                f"{d['dial_failures_median']} failed dials (medians)",
                "",
            ]
    rss, fds, cpu = fit["rss"], fit["fds"], fit["idle_cpu_cores_per_gateway"]
    if rss is not None:
        lines.append(
            f"RSS per gateway: {rss['per_peer'] / 1024:.0f} KiB per peer "
            f"(fit at 0 peers: {rss['at_zero'] / 2**20:.1f} MiB)"
        )
    if fds is not None:
        lines.append(f"file descriptors: {fds['per_peer']:.2f} per peer (+{fds['at_zero']:.0f})")
    if cpu is not None:
        lines.append(
            f"idle CPU per gateway: {1000 * cpu['per_peer']:.3f} ms/s per peer "
            f"(fit at 0 peers: {1000 * cpu['at_zero']:.2f} ms/s)"
        )
    return "\n".join(lines)
