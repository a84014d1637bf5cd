#!/usr/bin/env python3
"""CPU per Consul health answer: decoding with each JSON decoder, and the parse after it.

One answer has the shape ``scripts/bench/consul_bulk.py`` serves in ``bench_stall.py``
(``--instances`` instances of one service, ~93 KiB for 200), decoded by every decoder the
Consul source can use (``discovery/sources/consul_decode.py``: orjson when installed, the
standard library's json) in alternating rounds, best of ``--rounds``; then the source's parse of
an unchanged answer (fingerprints known: what a churn costs per service that answers).  Figures
are CPU time of this thread, and the ratio orjson / json of the same run.

Run: .venv/bin/python scripts/bench_consul_decode.py [--instances 200] [--rounds 7]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from discovery.sources.consul_decode import DECODERS
from discovery.sources.consul_parse import parse_health_service


def answer(n: int) -> str:
    return json.dumps(
        [
            {
                "Node": {
                    "ID": "",
                    "Node": f"node{i % 100}",
                    "Address": f"10.99.{i % 100}.1",
                    "Datacenter": "dc1",
                    "TaggedAddresses": None,
                    "Meta": None,
                    "CreateIndex": 10,
                    "ModifyIndex": 0,
                },
                "Service": {
                    "ID": f"i{i}",
                    "Service": "bulk7",
                    "Tags": None,
                    "Address": f"10.{(i >> 16) & 255}.{(i >> 8) & 255}.{i & 255}",
                    "Meta": {"gen": "1"},
                    "Port": 1 + i % 60000,
                    "Weights": {"Passing": 1, "Warning": 1},
                    "EnableTagOverride": False,
                    "Namespace": "default",
                    "Partition": "default",
                    "CreateIndex": 200000 + i,
                    "ModifyIndex": 200000 + i,
                },
                "Checks": [],
            }
            for i in range(n)
        ]
    )


def cpu_ms(fn: object, repeat: int) -> float:
    assert callable(fn)
    began = time.thread_time()
    for _ in range(repeat):
        fn()
    return (time.thread_time() - began) / repeat * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=200)
    args = parser.parse_args()
    body = answer(args.instances)
    best = dict.fromkeys(DECODERS, float("inf"))
    for _ in range(args.rounds):
        for name, loads in DECODERS.items():
            best[name] = min(best[name], cpu_ms(lambda loads=loads: loads(body), args.repeat))
    data = json.loads(body)
    known = parse_health_service(data, service="bulk7", namespace="default").fingerprints
    parse = min(
        cpu_ms(
            lambda: parse_health_service(data, service="bulk7", namespace="default", known=known),
            args.repeat,
        )
        for _ in range(args.rounds)
    )
    print(f"answer: {args.instances} instances, {len(body) / 1024:.0f} KiB")
    for name, ms in best.items():
        print(f"decode {name:<7} {ms:6.3f} ms CPU")
    print(f"parse (unchanged answer) {parse:6.3f} ms CPU")
    if "orjson" in best:
        print(f"orjson / json: {best['orjson'] / best['json']:.2f}x")


if __name__ == "__main__":
    main()
