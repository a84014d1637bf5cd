#!/usr/bin/env python3
"""Benchmark: CPU cost of fair sharing on a link, on against off, in the same run.

What the fair-sharing work adds to the data path, per unit of work:

* per request or tunnel to a peer site: a caller's share taken and released
  (``CallerShares.hold`` and its release) against none (``fair share`` rows);
* per DATA frame received on a link: the connection window credited on receipt and the
  stream's on consumption (``overlay.h2.credit``, two calls) against h2's one
  ``acknowledge_received_data`` that credited both on consumption (``window credit`` rows).

Each pair alternates in slices so drift hits both alike; the result is CPU microseconds per
operation (``time.process_time``) and the difference.  One process, no sockets: this is the
cost of the code itself, which the end-to-end figures (``bench_dataplane.py``) would hide in
their noise.

Run:  .venv/bin/python scripts/bench_link_fair.py [--ops 200000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import h2.config
import h2.connection
import trio

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from gateway.cluster.fair_share import CallerShares
from overlay.h2.credit import credit_connection, credit_stream

FRAME = 16 * 1024


async def _shares(ops: int, on: bool) -> float:
    shares = CallerShares("west", limit=100, wait_s=1.0)
    start = time.process_time()
    for i in range(ops):
        if on:
            release = await shares.hold(f"address:10.0.0.{i % 8}")
            release()
        else:
            await trio.lowlevel.checkpoint()  # what ``hold`` costs at least: its checkpoint
    return (time.process_time() - start) / ops * 1e6


def _server_with_stream() -> h2.connection.H2Connection:
    client = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    client.initiate_connection()
    server.initiate_connection()
    server.receive_data(client.data_to_send())
    client.send_headers(
        1, [(":method", "POST"), (":scheme", "https"), (":path", "/"), (":authority", "a")]
    )
    server.receive_data(client.data_to_send())
    server.data_to_send()
    return server


def _credit(ops: int, split: bool) -> float:
    server = _server_with_stream()
    start = time.process_time()
    for _ in range(ops):
        # Take the window down as a received frame would, then credit it back.
        server._inbound_flow_control_window_manager.window_consumed(FRAME)
        server.streams[1]._inbound_window_manager.window_consumed(FRAME)
        if split:
            credit_connection(server, FRAME)
            credit_stream(server, 1, FRAME)
        else:
            server.acknowledge_received_data(FRAME, 1)
        server.data_to_send()
    return (time.process_time() - start) / ops * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    share_off, share_on, ack_old, ack_new = [], [], [], []
    for _ in range(args.rounds):
        share_off.append(trio.run(_shares, args.ops, False))
        share_on.append(trio.run(_shares, args.ops, True))
        ack_old.append(_credit(args.ops, False))
        ack_new.append(_credit(args.ops, True))
    med = statistics.median
    print(
        f"fair share   off {med(share_off):6.2f} us/request  on {med(share_on):6.2f} us/request"
        f"  (+{med(share_on) - med(share_off):.2f} us)"
    )
    print(
        f"window credit old {med(ack_old):6.2f} us/frame   new {med(ack_new):6.2f} us/frame"
        f"  ({med(ack_new) - med(ack_old):+.2f} us)"
    )


if __name__ == "__main__":
    main()
