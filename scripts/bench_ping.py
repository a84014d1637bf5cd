#!/usr/bin/env python3
"""What one idle link PING costs, in process: CPU microseconds per PING (and its ack).

Why: at rest a gateway's links only PING, and with a full mesh of N sites that is N-1 links
per gateway, each pinged from both ends (``docs/scaling.md``).  This script opens ``--links``
real mTLS links on loopback between two identities in one process (``open_link`` /
``serve_links`` and ``LinkSession``, exactly as peering runs them), with a short
``--interval`` so PINGs dominate, and measures process CPU time over a ``--seconds`` window.
Both ends run here, so the figure per PING is the sender's PING plus the peer's ack plus the
sender's handling of the ack.  A same-run reference window with liveness off (links up, no
PINGs) is subtracted, so what remains is the PING's own cost.  Each round also runs a
same-run *reference*: the liveness loop as it was before an ack could move its sleep (it woke at
the PING's deadline as well as at the next PING time), patched in here, so the ratio of the two
is the saving.

    .venv/bin/python scripts/bench_ping.py                       # 20 links, 3 windows each
    .venv/bin/python scripts/bench_ping.py --profile 25          # + top 25 functions (cProfile)
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio

from overlay.h2.connection import H2Connection, log
from overlay.h2.liveness import DeclareDown, LivenessPolicy, SendPing, poll, start
from overlay.h2.stream import H2Stream, LinkDown
from overlay.link.accept import serve_links
from overlay.link.dial import open_link
from overlay.link.link import Link
from overlay.link.session import LinkSession
from scripts.bench_handshake import CLIENT_ID, SERVER_ID, make_identities


async def _reference_loop(self: H2Connection, policy: LivenessPolicy) -> None:
    """The liveness loop before this change: sleeps until the deadline even once answered."""
    self._liveness = start(policy, trio.current_time(), ping_at_once=self._ping_at_once)
    while True:
        self._liveness, action = poll(self._liveness, policy, trio.current_time())
        if isinstance(action, SendPing):
            self._engine.ping(action.payload)
            self._pump()
        elif isinstance(action, DeclareDown):
            log.warning("link down")
            self._begin_close(LinkDown("PING unanswered"), flush=False)
            return
        else:
            await trio.sleep_until(action.when)
            self._liveness_wakeups += 1


async def _refuse(stream: H2Stream) -> None:
    stream.reset(0)


def _pings(sessions: list[LinkSession]) -> tuple[int, int]:
    """PINGs sent and liveness wake-ups so far, over every link's outer connection."""
    total = wakeups = 0
    for s in sessions:
        state = s.outer._liveness
        total += 0 if state is None else state.sequence
        wakeups += s.outer._liveness_wakeups
    return total, wakeups


async def _window(
    root: Path, links: int, interval: float | None, seconds: float, profile: cProfile.Profile | None
) -> tuple[float, int, int]:
    """CPU seconds, PINGs sent and liveness wake-ups over ``seconds`` with ``links`` links."""
    server_id, client_id = make_identities(root)
    sessions: list[LinkSession] = []
    ready = trio.Semaphore(0)

    async def run(link: Link, dialed: bool) -> None:
        session = LinkSession(
            link,
            dialed=dialed,
            handler=_refuse,
            ping_interval=interval,
            ping_timeout=0.8 * interval if interval else 5.0,  # as the defaults: < interval
        )
        sessions.append(session)
        async with trio.open_nursery() as nursery:
            await nursery.start(session.run)
            ready.release()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(
                serve_links,
                partial(run, dialed=False),
                host="127.0.0.1",
                port=0,
                identity=server_id,
                authorize=lambda sid: sid == CLIENT_ID,
            )
        )
        port = listeners[0].socket.getsockname()[1]
        for _ in range(links):
            link = await open_link("127.0.0.1", port, identity=client_id, expected=SERVER_ID)
            nursery.start_soon(run, link, True)
        with trio.fail_after(60):
            for _ in range(2 * links):
                await ready.acquire()
        await trio.sleep(0.2)  # let set-up traffic settle
        pings0, cpu0 = _pings(sessions), time.process_time()
        if profile is not None:
            profile.enable()
        await trio.sleep(seconds)
        if profile is not None:
            profile.disable()
        cpu, (pings, wakeups) = time.process_time() - cpu0, _pings(sessions)
        nursery.cancel_scope.cancel()
    return cpu, pings - pings0[0], wakeups - pings0[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--links", type=int, default=20)
    parser.add_argument("--interval", type=float, default=0.1, help="PING interval, seconds")
    parser.add_argument("--seconds", type=float, default=3.0, help="window length")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--profile", type=int, default=0, help="print the top N functions")
    args = parser.parse_args()
    per_ping: dict[str, list[float]] = {"current": [], "reference": []}
    current_loop = H2Connection._liveness_loop
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            idle, _, _ = trio.run(_window, Path(tmp, f"i{r}"), args.links, None, args.seconds, None)
            for name, loop in (("reference", _reference_loop), ("current", current_loop)):
                H2Connection._liveness_loop = loop  # type: ignore[method-assign]
                busy, pings, wakeups = trio.run(
                    _window, Path(tmp, f"{name}{r}"), args.links, args.interval, args.seconds, None
                )
                us = (busy - idle) / max(pings, 1) * 1e6
                per_ping[name].append(us)
                print(
                    f"round {r} {name:9}: {pings} PINGs, {wakeups / max(pings, 1):.2f} wake-ups"
                    f" each, CPU {busy:.3f}s vs {idle:.3f}s without PINGs: {us:.1f} us per PING"
                    " (both ends)"
                )
            H2Connection._liveness_loop = current_loop  # type: ignore[method-assign]
        cur, ref = (statistics.median(per_ping[k]) for k in ("current", "reference"))
        print(
            f"median: {cur:.1f} us per PING (both ends) against {ref:.1f} us for the reference"
            f" loop: {cur / ref:.2f}x"
        )
        if args.profile:
            prof = cProfile.Profile()
            trio.run(_window, Path(tmp, "prof"), args.links, args.interval, args.seconds, prof)
            pstats.Stats(prof).sort_stats("tottime").print_stats(args.profile)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
