"""``isthmus demo``: the multi-site overlay on this machine, from the embedded default config."""

from __future__ import annotations

import argparse
import ipaddress
import signal
import sys
from pathlib import Path
from typing import Any

import trio

from gateway.config.errors import ConfigInvalid
from gateway.demo.preflight import relocate
from gateway.demo.runner import DemoFailed, run_demo
from gateway.demo.topology import Topology, default_topology, load_topology


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser(
        "demo", help="run a multi-site overlay on this machine (three sites on loopback)"
    )
    parser.add_argument(
        "--dir",
        type=Path,
        default=Path(".isthmus/demo"),
        help="state directory: CAs, SVIDs, configs, logs (default: .isthmus/demo)",
    )
    parser.add_argument(
        "--topology", type=Path, help="topology TOML (default: the embedded three-site demo)"
    )
    parser.add_argument(
        "--duration",
        type=float,
        help="stop after this many seconds once converged (default: run until Ctrl-C)",
    )
    parser.add_argument(
        "--base-address",
        type=ipaddress.IPv4Address,
        help="move the sites: site i listens on BASE + 256*i, e.g. 127.0.5.1 gives "
        "127.0.5.1, 127.0.6.1, 127.0.7.1 (default: the topology's, 127.0.{1,2,3}.1)",
    )
    for flag, field_name in _PORT_FLAGS.items():
        parser.add_argument(
            flag,
            type=int,
            metavar="PORT",
            help=f"every gateway's {field_name.removesuffix('_port').replace('_', '-')} "
            "listener port (default: the topology's)",
        )
    parser.set_defaults(func=_run)


# Command-line flag -> the Topology field it overrides.
_PORT_FLAGS = {
    "--admin-port": "admin_port",
    "--http-port": "http_port",
    "--east-west-port": "east_west_port",
    "--sni-port": "sni_port",
}


async def _main(topology: Topology, directory: Path, duration: float | None) -> bool:
    """Run the demo until it ends, or until SIGINT/SIGTERM; True if a signal stopped it.

    Signals are handled explicitly (not left to KeyboardInterrupt) so that the demo also
    stops cleanly when started from a script or a background job, where SIGINT may be ignored.
    """
    stopped = False
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:

            async def on_signal() -> None:
                nonlocal stopped
                async for _ in signals:
                    stopped = True
                    nursery.cancel_scope.cancel()
                    return

            nursery.start_soon(on_signal)
            await run_demo(topology, directory, duration=duration)
            nursery.cancel_scope.cancel()
    return stopped


def _demo_failure(exc: BaseException) -> str | None:
    """A user-facing reason if ``exc`` (possibly a trio exception group) is a demo failure."""
    if isinstance(exc, DemoFailed):
        return str(exc)
    if isinstance(exc, trio.TooSlowError):
        return f"the overlay did not converge: {exc}"
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _demo_failure(inner)
            if found is not None:
                return found
    return None


def _run(args: argparse.Namespace) -> int:
    try:
        if args.topology is not None:
            topology = load_topology(args.topology.read_text("utf-8"), filename=str(args.topology))
        else:
            topology = default_topology()
    except ConfigInvalid as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"isthmus demo: {exc}", file=sys.stderr)
        return 2
    ports = {f: getattr(args, f) for f in _PORT_FLAGS.values() if getattr(args, f) is not None}
    bad = [p for p in ports.values() if not 1 <= p <= 65535]
    if bad:
        print(f"isthmus demo: port {bad[0]} is outside 1..65535", file=sys.stderr)
        return 2
    try:
        topology = relocate(topology, base_address=args.base_address, ports=ports)
    except ValueError as exc:
        print(f"isthmus demo: {exc}", file=sys.stderr)
        return 2
    try:
        stopped = trio.run(_main, topology, args.dir, args.duration)
    except KeyboardInterrupt:
        stopped = True
    except BaseException as exc:
        failure = _demo_failure(exc)
        if failure is None:
            raise
        print(f"isthmus demo: {failure}", file=sys.stderr)
        return 1
    if stopped:
        print("\nstopped: every process the demo started has been stopped.")
    return 0
