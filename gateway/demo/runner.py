"""The demo supervisor: build a multi-site topology and run every site's processes.

Each site gets its own gateway process (``isthmus run``) and its example services
(``python -m gateway.demo.services``), all on the site's loopback address.  The supervisor
checks first that every address it needs is free, waits until every gateway's admin API answers
and every site routes to every service, prints what to try, reports any process that exits
afterwards (with the command that restarts it: killing a site is part of the demo) and, for a
site's gateway, when every site routes to every service again (it was restarted), and on
Ctrl-C (or after ``duration``) stops everything it started -- by PID, SIGTERM first, SIGKILL
after a grace.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import trio

from gateway.demo.admin_client import AdminUnavailable, admin_get, wait_for
from gateway.demo.preflight import PortUnavailable, check_binds, planned_binds
from gateway.demo.topology import BuiltSite, Topology, build_topology

STOP_GRACE_S = 5.0
READY_TIMEOUT_S = 60.0
#: How often the demo looks whether a site whose gateway exited is back (every site's /routes).
BACK_POLL_S = 1.0


@dataclass
class Child:
    name: str
    process: trio.Process
    log_path: Path
    argv: tuple[str, ...] = ()


class DemoFailed(Exception):
    """The demo cannot run: an address it needs is busy, or one of its processes exited
    before the overlay was up (the message then quotes the end of its log)."""


def describe_exit(returncode: int) -> str:
    """``status 3`` or ``signal SIGKILL``: how a child ended, as a person reads it."""
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"status {returncode}"


def exit_report(child: Child, returncode: int) -> str:
    """What the demo prints when one of its processes exits after the overlay is up.

    A site's gateway exiting is part of the demo (the guide tells the user to kill one), so it
    is reported with the command that starts it again, never treated as the demo's end.
    """
    what = f"site {child.name}" if "/" not in child.name else child.name
    return (
        f"{what} (pid {child.process.pid}) exited with {describe_exit(returncode)}; "
        f"restart it with:\n  {shlex.join(child.argv)}"
    )


async def _watch_children(
    children: list[Child],
    ready: trio.Event,
    out: Callable[[str], None],
    on_site_exit: Callable[[Child], None] | None = None,
) -> None:
    """Watch every child: before the overlay is up an exit fails the demo (port in use, bad
    identity, crash...); afterwards each exit is reported once and the demo keeps running.
    ``on_site_exit``: called for a site gateway's exit once reported."""
    reported: set[int] = set()
    while True:
        for child in children:
            code = child.process.returncode
            if code is None or id(child) in reported:
                continue
            if not ready.is_set():
                tail = child.log_path.read_text("utf-8", "replace").splitlines()[-5:]
                raise DemoFailed(
                    f"{child.name} exited with {describe_exit(code)}; "
                    f"end of {child.log_path}:\n  " + "\n  ".join(tail)
                )
            reported.add(id(child))
            out(exit_report(child, code))
            if on_site_exit is not None and "/" not in child.name:
                on_site_exit(child)
        await trio.sleep(0.2)


async def report_back(
    site: str,
    admin_urls: list[str],
    check: Callable[[Any], bool],
    out: Callable[[str], None],
    *,
    poll_s: float = BACK_POLL_S,
) -> None:
    """After ``site``'s gateway exited: say when every site (``site`` included, so its own
    admin API must answer again) routes to every service again, as at the start.

    Why: the guide tells the user to restart the site with the printed command; this line is
    the moment calls to it work again, so nobody has to guess how long a rejoin takes (peers
    redial with backoff, then import its services; with worker processes ``/routes`` lists a
    site once every worker routes there).  It polls until then -- for as long as the demo runs,
    like the watch on its children -- each look bounded by the admin client's timeout.
    """
    while True:
        await trio.sleep(poll_s)
        if await _all_converged(admin_urls, check):
            break
    out(f"site {site} is back: every site routes to every service again.")


async def _all_converged(admin_urls: list[str], check: Callable[[Any], bool]) -> bool:
    for url in admin_urls:
        try:
            if not check(await admin_get(url, "/routes")):
                return False
        except AdminUnavailable:
            return False
    return True


def _say(text: str) -> None:
    """Print at once: the demo's output is often a pipe or a file (scripts, tests)."""
    print(text, flush=True)


def admin_url(topology: Topology, site: BuiltSite) -> str:
    return f"http://{site.site.address}:{topology.admin_port}"


async def start_child(
    name: str, argv: list[str], log_path: Path, *, cwd: Path | None = None
) -> Child:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log: IO[bytes] = open(log_path, "ab")  # noqa: SIM115,ASYNC230 -- handed to the child
    try:
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        process = await trio.lowlevel.open_process(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=cwd
        )
    finally:
        log.close()
    return Child(name, process, log_path, tuple(argv))


async def stop_child(child: Child, *, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM, wait up to ``grace``, then SIGKILL.  Only ever our own child, by PID."""
    if child.process.returncode is not None:
        return
    child.process.send_signal(signal.SIGTERM)
    with trio.move_on_after(grace):
        await child.process.wait()
        return
    child.process.kill()
    await child.process.wait()


def gateway_argv(config: Path) -> list[str]:
    return [sys.executable, "-m", "gateway.cli", "run", str(config)]


def service_argv(kind: str, host: str, port: int, site: str) -> list[str]:
    args = ["--host", host, "--port", str(port), "--site", site]
    return [sys.executable, "-m", "gateway.demo.services", kind, *args]


def all_services(topology: Topology) -> set[str]:
    return {
        f"{s.service}.{s.namespace}.{topology.mesh_domain}"
        for site in topology.sites
        for s in site.services
    }


def converged(expected: set[str], n_sites: int) -> Callable[[Any], bool]:
    """Routes name every service, and whoami-like services shared by all sites list all."""

    def check(doc: Any) -> bool:
        routes = doc.get("routes", {})
        return expected <= set(routes) and any(len(v) == n_sites for v in routes.values())

    return check


async def run_demo(
    topology: Topology,
    root: Path,
    *,
    duration: float | None = None,
    out: Callable[[str], None] = _say,
) -> float:
    """Run the demo until cancelled (or ``duration`` seconds after convergence).

    Every address is checked before anything starts (``DemoFailed`` names a busy one).  Once
    the overlay is up, a process that exits is reported with its restart command and the demo
    keeps running; for a site's gateway it also says when the site is back.  Returns the
    seconds it took from starting the gateways until every site saw every route.
    """
    try:
        check_binds(planned_binds(topology))
    except PortUnavailable as exc:
        raise DemoFailed(str(exc)) from None
    built = await trio.to_thread.run_sync(build_topology, topology, root)
    children: list[Child] = []
    try:
        for site in built:
            for svc in site.site.services:
                argv = service_argv(svc.kind, str(site.site.address), svc.port, site.site.name)
                log_path = site.directory / f"{svc.service}.{svc.namespace}.log"
                children.append(
                    await start_child(f"{site.site.name}/{svc.service}", argv, log_path)
                )
        started = time.monotonic()
        for site in built:
            log_path = site.directory / "gateway.log"
            children.append(
                await start_child(site.site.name, gateway_argv(site.config_path), log_path)
            )
        expected = all_services(topology)
        ready = trio.Event()
        async with trio.open_nursery() as nursery:
            urls = [admin_url(topology, site) for site in built]

            def watch_return(child: Child) -> None:
                check = converged(expected, len(built))
                nursery.start_soon(report_back, child.name, urls, check, out)

            nursery.start_soon(_watch_children, children, ready, out, watch_return)
            for site in built:
                await wait_for(
                    admin_url(topology, site),
                    "/routes",
                    converged(expected, len(built)),
                    within_s=READY_TIMEOUT_S,
                )
            took = time.monotonic() - started
            ready.set()
            out(_guide(topology, built, children, took, root))
            if duration is None:
                await trio.sleep_forever()
            await trio.sleep(duration)
            nursery.cancel_scope.cancel()
        return took
    finally:
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for child in children:
                    nursery.start_soon(stop_child, child)


def _guide(
    topology: Topology, built: list[BuiltSite], children: list[Child], took: float, root: Path
) -> str:
    pids = {c.name: c.process.pid for c in children}
    lines = [
        "",
        f"Isthmus demo: {len(built)} sites linked over mTLS, catalogs federated in {took:.1f}s.",
        "",
    ]
    for site in built:
        s = site.site
        lines.append(
            f"  {s.name:<10} gateway pid {pids[s.name]:<7} trust domain {s.trust_domain}"
            f"  admin {admin_url(topology, site)}/"
        )
    first = built[0]
    base = admin_url(topology, first)
    a = first.site.address
    proxy = f"http://{a}:{topology.http_port}"
    second = built[1] if len(built) > 1 else first
    lines += [
        "",
        f"Try, as a caller in {first.site.name} (its gateway's HTTP listener is {proxy}):",
        f"  curl -x {proxy} http://whoami.default.isthmus/        # local site first",
        f"  curl -x {proxy} http://whoami.default.{second.site.name}.isthmus/   # pinned",
        f"  curl -x {proxy} http://api.payments.isthmus/          # HTTP/1.1 -> HTTP/2",
        f"  curl --http2-prior-knowledge -H 'Host: reports.default.isthmus' {proxy}/",
        f"  curl -x {proxy} http://reports.default.isthmus/       # served by the first",
        "                       # site in failover order; kill that site's gateway and repeat",
    ]
    py = shlex.quote(sys.executable)
    lines += [
        "  no curl? the same first call with the venv's Python:",
        f'  {py} -c "import urllib.request as u; print(u.build_opener(u.ProxyHandler('
        f"{{'http': '{proxy}'}})).open('http://whoami.default.isthmus/').read().decode())\"",
    ]
    for sp in topology.service_ports:
        if sp.protocol == "http":
            hint = f"(try: curl -H 'Host: x' http://{a}:{sp.port}/)"
        else:
            hint = (
                f"(try: {py} -c \"import socket; s = socket.create_connection(('{a}', "
                f"{sp.port})); s.sendall(b'hello'); print(s.recv(64))\")"
            )
        lines.append(f"  {sp.protocol} service port {a}:{sp.port} -> {sp.target}   {hint}")
    victim = second.site.name
    lines += [
        "",
        "Look inside:",
        f"  curl {base}/routes     # every L7 address and its sites, in failover order",
        f"  curl {base}/imports    # what the peers export, with version and freshness",
        f"  curl {base}/links      # the mTLS links, SPIFFE IDs, PING round-trip times",
        f"  curl {base}/catalog    # this site's own endpoints and their sources",
        "",
        f"Fail over: kill {pids[victim]}   # {victim}'s gateway; its routes leave within the PING",
        "  deadline and calls go to the next site.  This demo keeps running and prints the",
        "  command that starts the gateway again (in another terminal); it rejoins by itself,",
        f'  and this demo says when every site routes to it again ("site {victim} is back"):',
        f"  {shlex.join(gateway_argv(second.config_path))}",
        "  A gateway you restart runs in your terminal: stop it there with Ctrl-C.",
        "",
        f"State and logs: {root}/<site>/ .  Ctrl-C stops every process this demo started.",
    ]
    return "\n".join(lines)
