"""Start the minimal trio mTLS relay pair (``floor_l4.py``): the L4 floor of bench_dataplane.

Why its own module: the benchmark's main script sets up many references; this one is the
L4 floor's start-up alone, with its addresses.
"""

from __future__ import annotations

import sys
from pathlib import Path

import trio

from .backend import BackendAddrs
from .haproxy import bench_identity
from .procs import Fleet, wait_port

HERE = Path(__file__).resolve().parent
#: The minimal trio mTLS relay pair (scripts/bench/floor_l4.py) in front of the iperf3 sink.
FLOOR_L4_NEAR, FLOOR_L4_FAR = ("127.0.15.1", 18201), ("127.0.16.1", 18202)


def _hp(addr: tuple[str, int]) -> tuple[str, str]:
    return addr[0], str(addr[1])


async def start_floor_l4(
    fleet: Fleet, root: Path, read: int, backend: BackendAddrs
) -> tuple[int, int]:
    """The minimal trio mTLS relay pair, with its own two trust domains like HAProxy's,
    copying at most ``read`` bytes at a time (the gateways' ``tunnel_buffer_bytes``)."""
    crt_near, bundle_near = await trio.to_thread.run_sync(bench_identity, root, "near")
    crt_far, bundle_far = await trio.to_thread.run_sync(bench_identity, root, "far")
    script = str(HERE / "floor_l4.py")
    certs_near = (str(crt_near), str(bundle_far))
    iperf = (backend.iperf_host, str(backend.iperf_port))
    far = await fleet.start(
        "trio-floor-l4-far",
        [
            *(sys.executable, script, "far", *_hp(FLOOR_L4_FAR), *iperf),
            *(str(crt_far), str(bundle_near), str(read)),
        ],
    )
    near = await fleet.start(
        "trio-floor-l4-near",
        [
            *(sys.executable, script, "near", *_hp(FLOOR_L4_NEAR), *_hp(FLOOR_L4_FAR)),
            *(*certs_near, str(read)),
        ],
    )
    await wait_port(*FLOOR_L4_FAR, fleet=fleet)
    await wait_port(*FLOOR_L4_NEAR, fleet=fleet)
    return near.process.pid, far.process.pid
