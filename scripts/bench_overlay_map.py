#!/usr/bin/env python3
"""CPU of one ``GET /overlay`` document (the overlay map's data) against ``/catalog``, same run.

The map page polls ``/overlay`` every 3 s; the view runs on the gateway's event loop, so its
cost on a large catalog matters.  This builds catalogs of growing size (services x endpoints,
10 peers each exporting as many services), then times, in the same run:

* ``catalog``   the existing ``/catalog`` view of the same catalog (the reference);
* ``overlay``   a whole ``/overlay`` document with nothing reused (export rule ``*``);
* ``tagged``    the same with a tag rule no endpoint has (every endpoint checked per peer);
* ``reused``    a document whose costly parts are kept from the last one (what a page that
                keeps polling an unchanged gateway costs).

It prints the median milliseconds of each and its ratio to ``catalog``.  No network at all.

    .venv/bin/python scripts/bench_overlay_map.py            # ~30 s
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from discovery.catalog import apply_many
from discovery.events import Added
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog
from gateway.admin.overlay_map import imported_part, local_part, overlay_json
from gateway.commands.catalog import catalog_json
from overlay.federation.config import ExportConfig
from overlay.federation.import_ import ImportTable, ImportUpdate
from overlay.federation.protocol import ExportedService

PEERS = [f"peer-{k:02d}" for k in range(10)]


def build(services: int, per: int) -> tuple[Catalog, ImportTable]:
    names = [ServiceName(f"svc-{i:05d}", "default") for i in range(services)]
    events = [
        Added("static", Endpoint(n, f"10.{j // 250}.{j % 250}.1", 8080), "1", 0.0)
        for n in names
        for j in range(per)
    ]
    catalog = apply_many(Catalog(), events, now=0.0, policy=Policy(order=("static",)))[0]
    table = ImportTable(grace=60.0)
    upserts = tuple(ExportedService(n, ("http1",), 1, 1, 1, ()) for n in names)
    for peer in PEERS:
        table = table.apply(ImportUpdate(peer, "e", 1, True, upserts), now=0.0)
    return catalog, table


def median_ms(fn: Callable[[], Any], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times) * 1000


def measure(services: int, per: int, repeat: int) -> dict[str, float]:
    catalog, table = build(services, per)
    links = {p: {"up": True, "ping_rtt_s": 0.0005, "dialed_link": True} for p in PEERS}
    any_rule = (ExportConfig(),)
    tag_rule = (ExportConfig(tags=("public",)),)

    def doc(rules: tuple[ExportConfig, ...], **kw: Any) -> dict[str, Any]:
        return overlay_json(
            local_site="here",
            links=links,
            imports=table,
            catalog=catalog,
            export_rules=rules,
            now=1.0,
            rates=None,
            **kw,
        )

    kept_local = local_part(catalog, any_rule, PEERS, 1.0)
    kept_imports = {p: imported_part(table.peers[p]) for p in PEERS}
    return {
        "catalog": median_ms(lambda: catalog_json(catalog, 1.0), repeat),
        "overlay": median_ms(lambda: doc(any_rule), repeat),
        "tagged": median_ms(lambda: doc(tag_rule), repeat),
        "reused": median_ms(lambda: doc(any_rule, local=kept_local, imported=kept_imports), repeat),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"{'endpoints':>10} {'services':>9}  variant   median ms  vs /catalog")
    for services, per in ((100, 10), (100, 100), (1000, 100)):
        rows = measure(services, per, args.repeat)
        for name, ms in rows.items():
            ratio = ms / rows["catalog"]
            print(f"{services * per:>10} {services:>9}  {name:<8} {ms:>10.2f}  {ratio:>9.3f}x")


if __name__ == "__main__":
    main()
