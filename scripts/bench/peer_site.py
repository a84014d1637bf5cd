"""A peer site for the stall benchmark: a peering layer exporting N endpoints.  BENCH-ONLY.

A gateway's config file is limited to 4 MiB, too small for 100k static endpoints, so the peer
of the gateway under test is this process: the real peering layer (mTLS links, HTTP/2,
federation streams) of site ``--site``, with the identity that ``build_topology`` made under
``--root``, and a catalog of ``--endpoints`` endpoints (10 per service, namespace ``bulk``)
exported to every peer.  Starting it makes the gateway under test import a full snapshot.

Run: python scripts/bench/peer_site.py --root R --site B --address H --peer A=HOST:PORT:SPIFFE
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import trio

from discovery.catalog import apply
from discovery.events import Resynced
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from discovery.watch import Watch
from foundation.spiffe_id import SpiffeId, TrustDomain
from overlay.federation.config import ExportConfig
from overlay.identity.rotation import Identity
from overlay.identity.state import BundleSource, load_identity_state
from overlay.peering.config import PeeringSettings, PeerSpec
from overlay.peering.peers import Peering


def catalog(n: int) -> Catalog:
    eps = tuple(
        Endpoint(
            ServiceName(f"peer{i // 10}", "bulk"),
            f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
            8000 + i % 1000,
        )
        for i in range(n)
    )
    built, _ = apply(Catalog(), Resynced("bulk", eps, "1", 0.0), now=0.0, policy=Policy())
    return built


async def main(args: argparse.Namespace) -> None:
    root = Path(args.root)
    ident = root / args.site / "identity"
    bundles = [
        BundleSource(TrustDomain(p.name), p / "bundle.pem") for p in sorted((root / "ca").iterdir())
    ]
    identity = Identity(load_identity_state(ident / "svid.pem", ident / "svid_key.pem", bundles))
    peers = []
    for spec in args.peer:
        name, rest = spec.split("=", 1)
        host, port, spiffe = rest.split(":", 2)
        peers.append(PeerSpec(name, host, int(port), SpiffeId.parse(spiffe), dial=True))
    peering = Peering(
        local_site=args.site,
        identity=identity,
        peers=peers,
        catalog=Watch(catalog(args.endpoints)),
        export_rules=(ExportConfig(),),
        settings=PeeringSettings(ping_interval=2.0, ack_timeout=120.0),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(lambda **kw: peering.serve(host=args.address, port=args.port, **kw))
        print(f"peer site {args.site} serving {args.endpoints} endpoints", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", required=True)
    parser.add_argument("--site", required=True)
    parser.add_argument("--address", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--peer", action="append", default=[], help="NAME=HOST:PORT:SPIFFE-ID")
    parser.add_argument("--endpoints", type=int, default=100_000)
    trio.run(main, parser.parse_args())
