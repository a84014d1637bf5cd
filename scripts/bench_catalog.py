#!/usr/bin/env python3
"""Benchmark the pure catalog core: apply + diff at 1k, 10k and 100k endpoints.

For each size N: build the catalog with one Resynced of N endpoints (two sources overlapping on
10%, so merging is exercised), then apply R updates of 1% churn each, as a batch of incremental
events (1/3 Updated, 1/3 Removed, 1/3 Added) and, separately, as a full Resynced with 1% changed.
Reports median, p90 and worst CPU time per update (process CPU time, so other load on the
machine does not inflate it; the worst case includes Python's cyclic-GC passes over the whole
heap), the diff size, and the RSS that N endpoints cost (each size runs in a fresh child
process, so sizes do not pollute each other).  ``--gc-freeze`` shows the effect of
``gc.freeze()`` after the initial load, which a gateway can call once its catalog is built.

Targets (issue 3): a 1% delta on 100k endpoints applied in < 50 ms; 100k endpoints < 300 MB RSS.
Run:  .venv/bin/python scripts/bench_catalog.py [--rounds R] [--sizes 1000,10000,100000]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from discovery.catalog import apply, apply_many
from discovery.events import Added, Event, Removed, Resynced, Updated
from discovery.merge import Policy
from discovery.model import Endpoint, ServiceName
from discovery.snapshot import Catalog

POLICY = Policy(order=("static", "consul", "mdns"))
SERVICES = [ServiceName(f"svc{i}", "bench") for i in range(500)]


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def endpoint(i: int, weight: int = 1) -> Endpoint:
    return Endpoint(
        SERVICES[i % len(SERVICES)],
        f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
        1 + i % 60000,
        weight=weight,
        metadata=(("version", "v1"),),
    )


def build(n: int) -> tuple[Catalog, list[int]]:
    catalog, _ = apply(
        Catalog(),
        Resynced("consul", tuple(endpoint(i) for i in range(n)), "1", 0.0),
        now=0.0,
        policy=POLICY,
    )
    overlap = tuple(endpoint(i) for i in range(0, n, 10))
    catalog, _ = apply(catalog, Resynced("mdns", overlap, "1", 0.0), now=0.0, policy=POLICY)
    return catalog, list(range(n))


def churn_events(
    live: list[int], next_id: int, k: int, rnd: random.Random, version: str
) -> tuple[list[Event], list[int], int]:
    """k events: a third updates, a third removals, a third additions (ids stay unique)."""
    third = max(1, k // 3)
    picks = rnd.sample(range(len(live)), 2 * third)
    update_ids = [live[p] for p in picks[:third]]
    remove_pos = set(picks[third:])
    remove_ids = [live[p] for p in remove_pos]
    events: list[Event] = [
        Updated("consul", endpoint(i, weight=rnd.randint(2, 100)), version, 0.0) for i in update_ids
    ]
    events += [Removed("consul", endpoint(i).key, version, 0.0) for i in remove_ids]
    added = list(range(next_id, next_id + third))
    events += [Added("consul", endpoint(i), version, 0.0) for i in added]
    survivors = [v for p, v in enumerate(live) if p not in remove_pos] + added
    return events, survivors, next_id + third


def measure(n: int, rounds: int, freeze: bool) -> dict[str, float]:
    rnd = random.Random(n)
    gc.collect()
    base = rss_bytes()
    t0 = time.process_time()
    catalog, live = build(n)
    build_s = time.process_time() - t0
    gc.collect()
    rss = rss_bytes() - base
    if freeze:  # what a gateway can do after its initial load: old objects leave GC scans
        gc.freeze()
    k = max(3, n // 100)
    delta_ms: list[float] = []
    diff_sizes: list[int] = []
    next_id = n
    for r in range(rounds):
        events, live, next_id = churn_events(live, next_id, k, rnd, str(r + 2))
        t = time.process_time()
        catalog, diff = apply_many(catalog, events, now=float(r + 1), policy=POLICY)
        delta_ms.append((time.process_time() - t) * 1000)
        diff_sizes.append(len(diff))
    # Full-set resync with 1% changed: inherently O(N) (the event itself has N endpoints).
    resync_ms: list[float] = []
    for r in range(max(1, rounds // 4)):
        events, live, next_id = churn_events(live, next_id, k, rnd, "x")
        full = tuple(endpoint(i) for i in live)
        t = time.process_time()
        catalog, diff = apply(
            catalog, Resynced("consul", full, f"r{r}", 0.0), now=100.0 + r, policy=POLICY
        )
        resync_ms.append((time.process_time() - t) * 1000)
    return {
        "endpoints": n,
        "events_per_update": k,
        "build_s": round(build_s, 3),
        "delta_median_ms": round(statistics.median(delta_ms), 2),
        "delta_p90_ms": round(sorted(delta_ms)[int(len(delta_ms) * 0.9)], 2),
        "delta_max_ms": round(max(delta_ms), 2),
        "delta_us_per_event": round(statistics.median(delta_ms) * 1000 / k, 1),
        "diff_keys_median": statistics.median(diff_sizes),
        "resync_1pct_median_ms": round(statistics.median(resync_ms), 1),
        "rss_mb": round(rss / 2**20, 1),
        "rss_mb_per_100k": round(rss / 2**20 * 100_000 / n, 1),
        "catalog_size": len(catalog),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument(
        "--gc-freeze", action="store_true", help="gc.freeze() after the initial load"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.rounds, args.gc_freeze)))
        return 0
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        cmd = [sys.executable, __file__, "--child", str(n), "--rounds", str(args.rounds)]
        out = subprocess.run(
            cmd + (["--gc-freeze"] if args.gc_freeze else []),
            check=True,
            capture_output=True,
            text=True,
            timeout=110,
        )
        rows.append(json.loads(out.stdout))
    cols = [
        ("endpoints", "N"),
        ("events_per_update", "1% events"),
        ("delta_median_ms", "delta med ms"),
        ("delta_p90_ms", "delta p90 ms"),
        ("delta_max_ms", "delta max ms"),
        ("delta_us_per_event", "us/event"),
        ("resync_1pct_median_ms", "resync ms"),
        ("build_s", "build s"),
        ("rss_mb", "RSS MB"),
        ("rss_mb_per_100k", "MB/100k"),
    ]
    print("  ".join(f"{title:>12}" for _, title in cols))
    for row in rows:
        print("  ".join(f"{row[key]:>12}" for key, _ in cols))
    big = rows[-1]
    if big["endpoints"] >= 100_000:
        ok_delta = big["delta_median_ms"] < 50
        ok_rss = big["rss_mb_per_100k"] < 300
        print(
            f"\ntarget 1% delta on 100k < 50 ms: {'PASS' if ok_delta else 'FAIL'}"
            f" ({big['delta_median_ms']} ms median)"
        )
        print(
            f"target 100k endpoints < 300 MB RSS: {'PASS' if ok_rss else 'FAIL'}"
            f" ({big['rss_mb_per_100k']} MB)"
        )
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        growth = last["delta_us_per_event"] / first["delta_us_per_event"]
        size_ratio = last["endpoints"] / first["endpoints"]
        print(
            f"cost per changed endpoint grows x{growth:.2f} while the catalog grows "
            f"x{size_ratio:.0f} (near-linear in the change, ~log in the size)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
