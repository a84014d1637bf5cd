"""Burn CPU the way a control plane does, for a bounded time.  BENCH-ONLY.

``python scripts/bench/burner.py --seconds S --duty D`` decodes a 100 KiB JSON document (a
Consul answer's shape) over and over for ``D`` of every 10 ms and sleeps the rest, for ``S``
seconds, then exits.  ``bench_stall.py``'s ``burn`` phase runs it beside the gateway with no
catalog change at all: the request latency it causes is what *any* work of that size on the
machine costs the data path, whoever does it -- the reference the churn phase's latency is
compared with.
"""

from __future__ import annotations

import argparse
import json
import time

SLOT_S = 0.010


def document() -> str:
    """About 100 KiB of JSON shaped like a Consul health answer (200 instances)."""
    entries = [
        {
            "Node": {"Node": f"node-{i}", "Address": f"198.18.{i // 250}.{i % 250}"},
            "Service": {
                "ID": f"web-{i}",
                "Service": "web",
                "Address": f"198.18.{i // 250}.{i % 250}",
                "Port": 8000 + i,
                "Tags": ["v1", "canary"],
                "Meta": {"version": "1", "zone": "a"},
            },
            "Checks": [{"CheckID": "serfHealth", "Status": "passing", "Output": "ok" * 40}],
        }
        for i in range(200)
    ]
    return json.dumps(entries)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--duty", type=float, default=0.6, help="busy share of each 10 ms")
    args = parser.parse_args()
    if not (0 < args.seconds <= 600 and 0 < args.duty <= 1):
        parser.error("--seconds in (0, 600], --duty in (0, 1]")
    doc = document()
    end = time.monotonic() + args.seconds
    while (start := time.monotonic()) < end:
        while time.monotonic() - start < args.duty * SLOT_S:
            json.loads(doc)
        time.sleep(max(0.0, SLOT_S - (time.monotonic() - start)))


if __name__ == "__main__":
    main()
