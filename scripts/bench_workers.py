#!/usr/bin/env python3
"""Benchmark the supervisor -> worker snapshot channel: a full catalog, then a 1% delta.

``--snapshot N``: the supervisor side (this process) builds an N-endpoint catalog the way
``scripts/bench_catalog.py`` does (500 services, two sources overlapping on 10%), starts a
real child process with one end of a real Unix socketpair (``pass_fds``, as the worker pool
does) and sends it the full snapshot through :class:`gateway.workers.snapshot.SnapshotFeed`
and :class:`gateway.workers.channel.Channel`; then it applies a 1% churn to the catalog
(a third updated, removed, added) and sends the delta.  Reported per phase:

* bytes on the channel and the number of messages (and the largest one);
* supervisor CPU: ``messages_for`` (building parts / diffing) and pickling, separately;
* worker CPU: receiving + unpickling, and applying (``SnapshotReceiver.apply``), separately,
  measured in the child with ``time.process_time`` (other load on the machine does not count);
* the wall time from the first byte sent until the worker has applied the last message;
* the child's RSS before the snapshot, after the full one and after the delta;
* the reference, same run: the supervisor's own discovery work for the same change (building
  the catalog from its Resynced events for the full snapshot, ``apply_many`` of the churn for
  a delta), and each side's CPU as a ratio of it.

Run:  .venv/bin/python scripts/bench_workers.py --snapshot 100000 [--rounds 3] [--json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import trio  # noqa: E402
from bench_catalog import POLICY, build, churn_events  # noqa: E402

from discovery.catalog import apply_many  # noqa: E402
from gateway.workers.channel import Channel, channel_from_fd, channel_pair, encode  # noqa: E402
from gateway.workers.messages import Hello, Welcome  # noqa: E402
from gateway.workers.snapshot import (  # noqa: E402
    NeedResync,
    SnapshotFeed,
    SnapshotReceiver,
    clock_base,
)


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


# --- the worker (child process) ------------------------------------------------------------


async def child(fd: int) -> None:
    channel = channel_from_fd(fd)
    async with channel:
        await channel.send(Hello(0, os.getpid()))
        welcome = await channel.receive()
        assert isinstance(welcome, Welcome)
        rx = SnapshotReceiver(clock_offset=clock_base() - welcome.clock_base)
        gc.collect()
        report: dict[str, Any] = {"rss_start": rss_bytes()}
        decode = apply_cpu = 0.0
        applied_at = 0.0
        while True:
            t0 = time.process_time()
            message = await channel.receive()
            t1 = time.process_time()
            if isinstance(message, tuple) and message[0] == "report":
                gc.collect()
                await channel.send(
                    {
                        **report,
                        "phase": message[1],
                        "applied_at": applied_at,
                        "decode_cpu_s": decode,
                        "apply_cpu_s": apply_cpu,
                        "rss": rss_bytes(),
                        "size": len(rx.catalog),
                        "version": rx.catalog.version,
                    }
                )
                decode = apply_cpu = 0.0
                continue
            if message == "exit":
                return
            decode += t1 - t0
            result = rx.apply(message)
            apply_cpu += time.process_time() - t1
            applied_at = time.perf_counter()  # CLOCK_MONOTONIC: the same in both processes
            if isinstance(result, NeedResync):
                raise SystemExit(f"worker needs a resync: {result.reason}")


# --- the supervisor (this process) ---------------------------------------------------------


async def send_phase(
    channel: Channel, feed: SnapshotFeed, version: object, phase: str
) -> dict[str, Any]:
    t0 = time.process_time()
    messages = feed.messages_for(version)  # type: ignore[arg-type]
    t1 = time.process_time()
    frames = [encode(m) for m in messages]
    t2 = time.process_time()
    start = time.perf_counter()
    for frame in frames:
        await channel.send_encoded(frame)
    await channel.send(("report", phase))
    reply = await channel.receive()
    assert isinstance(reply, dict)
    wall = reply["applied_at"] - start
    return {
        **reply,
        "messages": len(frames),
        "kinds": sorted({type(m).__name__ for m in messages}),
        "bytes": sum(len(f) for f in frames),
        "max_message_bytes": max((len(f) for f in frames), default=0),
        "build_cpu_s": t1 - t0,
        "pickle_cpu_s": t2 - t1,
        "wall_s": wall,
    }


async def supervise(n: int, rounds: int) -> dict[str, Any]:
    t0 = time.process_time()
    catalog, live = build(n)
    build_cpu = time.process_time() - t0
    feed = SnapshotFeed(catalog=catalog)
    ours, theirs = channel_pair()
    cmd = [sys.executable, __file__, "--child-fd", str(theirs.fileno())]
    proc = await trio.lowlevel.open_process(cmd, pass_fds=[theirs.fileno()])
    theirs.close()
    try:
        async with ours:
            with trio.fail_after(600):
                hello = await ours.receive()
                assert isinstance(hello, Hello)
                await ours.send(Welcome(clock_base()))
                full = await send_phase(ours, feed, None, "full")
                full["discovery_cpu_s"] = build_cpu
                assert full["size"] == len(catalog), (full["size"], len(catalog))
                rnd = random.Random(n)
                deltas = []
                next_id = n
                for r in range(rounds):
                    held = feed.version
                    k = max(3, n // 100)
                    events, live, next_id = churn_events(live, next_id, k, rnd, str(r + 2))
                    t0 = time.process_time()
                    catalog, _ = apply_many(catalog, events, now=float(r + 1), policy=POLICY)
                    discovery_cpu = time.process_time() - t0
                    feed.publish_catalog(catalog)
                    delta = await send_phase(ours, feed, held, "delta")
                    delta["discovery_cpu_s"] = discovery_cpu
                    assert delta["size"] == len(catalog) and delta["version"] == catalog.version
                    delta["events"] = k
                    deltas.append(delta)
                await ours.send("exit")
        with trio.fail_after(60):
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()  # our own child, by its handle
            await proc.wait()
    return {"endpoints": n, "full": full, "deltas": deltas}


def ratio(row: dict[str, Any], a: str, b: str) -> float:
    """CPU of one side (``a`` + ``b``) against the discovery work of the same change."""
    return float((row[a] + row[b]) / max(row["discovery_cpu_s"], 1e-9))


def show(result: dict[str, Any]) -> None:
    full, deltas = result["full"], result["deltas"]

    def med(key: str) -> float:
        return float(statistics.median(d[key] for d in deltas))

    mib = 1 << 20
    print(
        f"catalog: {result['endpoints']} endpoints; worker RSS at start "
        f"{full['rss_start'] / mib:.1f} MiB"
    )
    print(
        f"{'phase':>8} {'msgs':>5} {'bytes':>11} {'max msg':>9} {'build ms':>9} "
        f"{'pickle ms':>9} {'decode ms':>9} {'apply ms':>9} {'wall ms':>8} {'RSS MiB':>8} "
        f"{'disc. ms':>8} {'sup/disc':>8} {'wrk/disc':>8}"
    )
    rows = [("full", full)] + [(f"1% #{i + 1}", d) for i, d in enumerate(deltas)]
    for name, row in rows:
        print(
            f"{name:>8} {row['messages']:>5} {row['bytes']:>11} {row['max_message_bytes']:>9} "
            f"{row['build_cpu_s'] * 1e3:>9.1f} {row['pickle_cpu_s'] * 1e3:>9.1f} "
            f"{row['decode_cpu_s'] * 1e3:>9.1f} {row['apply_cpu_s'] * 1e3:>9.1f} "
            f"{row['wall_s'] * 1e3:>8.1f} {row['rss'] / mib:>8.1f} "
            f"{row['discovery_cpu_s'] * 1e3:>8.1f} "
            f"{ratio(row, 'build_cpu_s', 'pickle_cpu_s'):>8.2f} "
            f"{ratio(row, 'decode_cpu_s', 'apply_cpu_s'):>8.2f}"
        )
    if deltas:
        print(
            f"1% delta median: {med('bytes') / 1024:.0f} KiB, supervisor "
            f"{(med('build_cpu_s') + med('pickle_cpu_s')) * 1e3:.1f} ms CPU, worker "
            f"{(med('decode_cpu_s') + med('apply_cpu_s')) * 1e3:.1f} ms CPU; discovery's "
            f"apply of the same change {med('discovery_cpu_s') * 1e3:.1f} ms"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--snapshot", type=int, metavar="N", help="endpoints in the catalog")
    parser.add_argument("--rounds", type=int, default=3, help="1%% deltas to send")
    parser.add_argument("--json", action="store_true", help="print the raw figures as JSON")
    parser.add_argument("--child-fd", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_fd is not None:
        trio.run(child, args.child_fd)
        return 0
    if not args.snapshot:
        parser.error("give --snapshot N")
    result = trio.run(supervise, args.snapshot, args.rounds)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        show(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
