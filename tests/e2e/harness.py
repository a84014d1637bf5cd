"""Real gateway processes for end-to-end tests.

``open_overlay`` builds a topology (development CAs, SVIDs, configs) under a temporary
directory, starts one ``isthmus run`` process per site on its own loopback address, and stops
every process it started (by PID) when the block ends.  Addresses are 127.<b>.<i>.1 with ``b``
derived from the test process id and a counter, so tests never collide with each other or with
a demo running on 127.0.{1,2,3}.1.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import trio

from foundation.spiffe_id import TrustDomain
from gateway.demo.admin_client import admin_get, wait_for
from gateway.demo.runner import Child, gateway_argv, service_argv, start_child, stop_child
from gateway.demo.topology import BuiltSite, DemoService, DemoSite, Topology, build_topology

_block = itertools.count()

#: ``[site] workers`` of every site a test does not set itself.  One process (0) by default:
#: the gateway's own default, one worker per core, makes every site three processes here and
#: the suite several times slower; the worker tests set their sites' workers themselves.
#: ``ISTHMUS_E2E_WORKERS=2 scripts/test`` runs the whole end-to-end suite in worker mode;
#: a test module may run in both modes with :func:`both_modes`.
E2E_WORKERS = int(os.environ.get("ISTHMUS_E2E_WORKERS", "0"))


@pytest.fixture(params=[0, 2], ids=["one-process", "workers"])
def both_modes(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> int:
    """Use as ``pytestmark = pytest.mark.usefixtures("both_modes")``: every test of the
    module runs with one process per site, then with two workers per site."""
    workers = int(request.param) if E2E_WORKERS == 0 else E2E_WORKERS
    monkeypatch.setattr(sys.modules[__name__], "E2E_WORKERS", workers)
    return workers


def loopback_block() -> int:
    """A second octet ``b`` for 127.<b>.x.y addresses no other test of this run uses."""
    return 20 + (os.getpid() * 7 + next(_block)) % 230


def make_topology(
    names: Sequence[str],
    services: dict[str, tuple[DemoService, ...]] | None = None,
    **overrides: Any,
) -> Topology:
    """Sites named ``names`` on fresh loopback addresses, fast liveness, short grace."""
    b = loopback_block()
    sites = tuple(
        DemoSite(
            name=name,
            trust_domain=TrustDomain(f"{name}.e2e.test"),
            address=ipaddress.IPv4Address(f"127.{b}.{i + 1}.1"),
            services=(services or {}).get(name, ()),
            priority=10 * (i + 1),
            workers=E2E_WORKERS,
        )
        for i, name in enumerate(names)
    )
    settings: dict[str, Any] = {
        "ping_interval_s": 0.5,
        "ping_timeout_s": 1.0,
        "import_grace_s": 4.0,
    }
    settings.update(overrides)
    return Topology(sites=sites, **settings)


@dataclass
class Overlay:
    topology: Topology
    root: Path
    built: dict[str, BuiltSite]
    children: dict[str, Child]
    gateway_args: tuple[str, ...] = ()  # appended to every ``isthmus run`` (e.g. --log-level)

    def url(self, site: str) -> str:
        return f"http://{self.built[site].site.address}:{self.topology.admin_port}"

    async def get(self, site: str, path: str) -> Any:
        return await admin_get(self.url(site), path)

    async def wait(
        self, site: str, path: str, predicate: Callable[[Any], Any], *, within_s: float = 20.0
    ) -> Any:
        return await wait_for(self.url(site), path, predicate, within_s=within_s)

    async def start(self, site: str) -> None:
        built = self.built[site]
        self.children[site] = await start_child(
            site,
            [*gateway_argv(built.config_path), *self.gateway_args],
            built.directory / "gateway.log",
        )
        await self.wait(site, "/healthz", lambda doc: doc.get("status") == "ok")

    async def stop(self, site: str) -> None:
        await stop_child(self.children[site])

    async def kill(self, site: str) -> None:
        child = self.children[site]
        child.process.kill()
        await child.process.wait()

    def log(self, site: str) -> str:
        return (self.built[site].directory / "gateway.log").read_text("utf-8", "replace")


@asynccontextmanager
async def open_overlay(
    root: Path,
    topology: Topology,
    *,
    patch: Callable[[str, str], str] | None = None,
    start: Sequence[str] | None = None,
    services: bool = False,
    gateway_args: Sequence[str] = (),
) -> AsyncIterator[Overlay]:
    """Build ``topology`` under ``root`` and start the gateways named in ``start`` (all).

    With ``services``, every site's demo services run too (as their own processes).
    """
    built = {b.site.name: b for b in await trio.to_thread.run_sync(build_topology, topology, root)}
    if patch is not None:
        for name, b in built.items():
            b.config_path.write_text(patch(name, b.config_path.read_text("utf-8")), "utf-8")
    overlay = Overlay(topology, root, built, {}, tuple(gateway_args))
    try:
        if services:
            for name, b in built.items():
                for svc in b.site.services:
                    argv = service_argv(svc.kind, str(b.site.address), svc.port, name)
                    log_path = b.directory / f"{svc.service}.{svc.namespace}.log"
                    child = await start_child(f"{name}/{svc.service}", argv, log_path)
                    overlay.children[f"{name}/{svc.service}"] = child
        async with trio.open_nursery() as nursery:
            for name in start if start is not None else list(built):
                nursery.start_soon(overlay.start, name)
        yield overlay
    finally:
        with trio.CancelScope(shield=True):
            async with trio.open_nursery() as nursery:
                for child in overlay.children.values():
                    nursery.start_soon(stop_child, child)


def linked(links: Any, site: str) -> bool:
    """Whether ``/links`` shows site ``site`` up -- and, for a gateway with workers, up from
    every worker (requests run in the workers, each over its own links)."""
    row = links.get(site) if isinstance(links, dict) else None
    if not isinstance(row, dict) or not row.get("up"):
        return False
    workers = row.get("workers")
    return workers is None or all(w.get("up") for w in workers)


def routes_of(doc: Any, address: str) -> list[str] | None:
    routes: dict[str, list[str]] = doc.get("routes", {})
    return routes.get(address)


def with_site(topology: Topology, name: str, **changes: Any) -> Topology:
    sites = tuple(replace(s, **changes) if s.name == name else s for s in topology.sites)
    return replace(topology, sites=sites)
