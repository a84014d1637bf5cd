"""Two peering layers over real mTLS links: no task step walks more than a slice of endpoints.

Site ``a`` holds 20 000 endpoints (500 services) and exports them to ``b``; then 1 % of them
change.  A trio instrument counts, per task step, the endpoint-level work of the federation
and routing paths -- ``Catalog.is_routable`` (walking the catalog for the export view and the
routing view) and ``consents`` (export consent per endpoint) -- and the test asserts that no
step did more than one slice of it.  Counts, not seconds.  Before slicing, the exporter's first
fold and the route loop each walked all 20 000 endpoints in one step.  (The route loop now looks
at one endpoint per service: O(services) per rebuild, which stays under the slice here.)
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.lowlevel

import overlay.federation.export
from discovery.catalog import apply, apply_many
from discovery.events import Removed, Resynced, Updated
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from discovery.steps import SLICE_ITEMS
from discovery.watch import Watch
from foundation.spiffe_id import TrustDomain
from gateway.demo.topology import DemoSite, Topology, build_topology
from overlay.federation.config import ExportConfig
from overlay.identity.rotation import Identity
from overlay.identity.state import BundleSource, load_identity_state
from overlay.peering.config import PeeringSettings, PeerSpec
from overlay.peering.peers import Peering

N = 20_000
PER_SERVICE = 40
SITES = ("a", "b")


def endpoint(i: int, healthy: bool = True) -> Endpoint:
    return Endpoint(
        ServiceName(f"svc{i // PER_SERVICE}", "bench"),
        f"10.0.{i >> 8}.{i & 255}",
        80 + i % 7,
        healthy=healthy,
    )


class WorkPerStep(trio.abc.Instrument):
    def __init__(self) -> None:
        self.current = {"routable": 0, "consents": 0}
        self.most = dict(self.current)

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        for kind in self.current:
            self.current[kind] = 0

    def after_task_step(self, task: trio.lowlevel.Task) -> None:
        for kind, count in self.current.items():
            self.most[kind] = max(self.most[kind], count)

    def counting(self, kind: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any) -> Any:
            self.current[kind] += 1
            return fn(*args)

        return wrapper


def peerings(root: Path, catalogs: dict[str, Watch[Catalog]]) -> dict[str, Peering]:
    topology = Topology(
        sites=tuple(
            DemoSite(n, TrustDomain(f"{n}.stall.test"), ipaddress.IPv4Address(f"127.0.{96 + i}.1"))
            for i, n in enumerate(SITES)
        )
    )
    built = {b.site.name: b for b in build_topology(topology, root)}
    bundles = [
        BundleSource(s.trust_domain, root / "ca" / s.trust_domain.name / "bundle.pem")
        for s in topology.sites
    ]
    out = {}
    for site in topology.sites:
        ident = built[site.name].directory / "identity"
        peers = [
            PeerSpec(o.name, str(o.address), 15443, o.gateway_id, dial=o.name < site.name)
            for o in topology.sites
            if o.name != site.name
        ]
        out[site.name] = Peering(
            local_site=site.name,
            identity=Identity(
                load_identity_state(ident / "svid.pem", ident / "svid_key.pem", bundles)
            ),
            peers=peers,
            catalog=catalogs[site.name],
            export_rules=(ExportConfig(),),
            settings=PeeringSettings(ping_interval=30.0, ping_timeout=30.0, ack_timeout=300.0),
        )
    return out


async def imported(b: Peering, check: Callable[[dict[ServiceName, Any]], bool]) -> None:
    while True:
        peer = b.imports.latest.peers.get("a")
        if peer is not None and check({k: v.service for k, v in peer.services.items()}):
            return
        await b.imports.wait_newer(b.imports.count)


async def test_federation_and_routing_never_walk_more_than_a_slice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    probe = WorkPerStep()
    monkeypatch.setattr(Catalog, "is_routable", probe.counting("routable", Catalog.is_routable))
    monkeypatch.setattr(
        overlay.federation.export,
        "consents",
        probe.counting("consents", overlay.federation.export.consents),
    )
    policy = Policy(order=("bench",))
    live = [endpoint(i) for i in range(N)]
    catalog, _ = apply(Catalog(), Resynced("bench", tuple(live), "1", 0.0), now=0.0, policy=policy)
    catalogs = {n: Watch(Catalog()) for n in SITES}
    sites = peerings(tmp_path, catalogs)
    with trio.fail_after(300):  # hang guard only
        async with trio.open_nursery() as nursery:
            for name, address in (("a", "127.0.96.1"), ("b", "127.0.97.1")):
                await nursery.start(
                    lambda p=sites[name], h=address, **kw: p.serve(host=h, port=15443, **kw)
                )
            while sites["b"].outbound("a") is None or sites["a"].outbound("b") is None:  # noqa: ASYNC110
                await trio.sleep(0.05)  # links come up in other tasks
            trio.lowlevel.add_instrument(probe)
            try:
                catalogs["a"].publish(catalog)  # the first export: a full fold and snapshot
                await imported(sites["b"], lambda s: len(s) == N // PER_SERVICE)
                # 1 % churn across the services: some unhealthy, some removed
                events = [
                    Updated("bench", endpoint(i, healthy=False), "2", 0.0) for i in range(0, N, 200)
                ]
                events += [Removed("bench", endpoint(i).key, "2", 0.0) for i in range(5, N, 200)]
                catalog, _ = apply_many(catalog, events, now=0.0, policy=policy)
                catalogs["a"].publish(catalog)
                target = ServiceName("svc0", "bench")
                await imported(sites["b"], lambda s: s[target].healthy_count == PER_SERVICE - 2)
            finally:
                trio.lowlevel.remove_instrument(probe)
            nursery.cancel_scope.cancel()
    assert probe.most["routable"] > 0 and probe.most["consents"] > 0, probe.most
    assert probe.most["routable"] <= SLICE_ITEMS, probe.most
    assert probe.most["consents"] <= SLICE_ITEMS, probe.most
