"""``isthmus run CONFIG``: run one gateway until SIGINT/SIGTERM; SIGHUP reloads CONFIG."""

from __future__ import annotations

import argparse
import functools
import logging
import signal
import sys
import traceback
from pathlib import Path
from typing import Any, TypeVar

import trio

from foundation.errors import ConfigError, IdentityError, IsthmusError
from foundation.redact import remember_secret
from gateway.app import serve_gateway
from gateway.config.errors import ConfigInvalid
from gateway.config.model import resolve_workers
from gateway.fleet.startup import start_config
from gateway.logs import LogSpec, parse_log_spec, setup_logging
from gateway.reload.apply import ConfigReloader, load_versioned_text
from gateway.workers.supervise import Supervisor

E = TypeVar("E", bound=BaseException)


def register(sub: Any) -> None:
    parser: argparse.ArgumentParser = sub.add_parser("run", help="run a gateway")
    parser.add_argument("config", type=Path, help="gateway config (TOML)")
    parser.add_argument(
        "--log-level",
        default=parse_log_spec("info"),
        type=_log_spec,
        metavar="SPEC",
        help="level of Isthmus's own loggers (debug, info, warning, error; default info), "
        "then optional LOGGER=LEVEL items for others, e.g. 'debug,hpack=debug'; "
        "third-party loggers stay at warning unless named",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    try:
        config, version, text = load_versioned_text(args.config)
    except ConfigInvalid as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    setup_logging(args.log_level, site=config.site.name)
    for source in config.sources:  # the Consul ACL token never reaches a log line
        remember_secret(getattr(source, "token", None))
    for path, message in config.warnings():  # as `isthmus config check` prints them
        logging.getLogger("isthmus.gateway").warning("config %s: %s", path, message)
    try:
        trio.run(_main, config, args.config, version, text, args.log_level.text())
    except KeyboardInterrupt:
        pass
    except BaseException as exc:
        os_error = _leaf(exc, OSError)
        if os_error is not None and _isthmus_error(exc) is None:
            # e.g. a listener's address in use: the operator's problem, not a bug.
            print(f"isthmus: {os_error}", file=sys.stderr)
            return 1
        error = _isthmus_error(exc)
        if error is None:
            raise
        if not isinstance(error, ConfigError | IdentityError):  # a bug: show where
            traceback.print_exception(exc, file=sys.stderr)
        print(f"isthmus: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


def _log_spec(text: str) -> LogSpec:
    try:
        return parse_log_spec(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _leaf(exc: BaseException, kind: type[E]) -> E | None:
    """The first ``kind`` error behind ``exc`` (trio wraps task errors in exception groups)."""
    if isinstance(exc, kind):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _leaf(inner, kind)
            if found is not None:
                return found
    return None


def _isthmus_error(exc: BaseException) -> IsthmusError | None:
    return _leaf(exc, IsthmusError)


async def _main(config: Any, path: Path, version: str, text: str, log_spec: str) -> None:
    """Serve until SIGTERM/SIGINT.  SIGHUP reloads the config file (see docs/reload.md); the
    receiver is open before the gateway starts, so an early SIGHUP never kills the process
    (the default action of SIGHUP).

    With ``[site] workers`` (docs/workers.md) this process is the supervisor: it starts the
    worker processes, and on SIGTERM/SIGINT drains them (they finish what is in flight, up to
    ``[limits] drain_grace_s``) before it stops.
    """
    async with trio.open_nursery() as nursery:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            config, fleet = await start_config(config, path)  # docs/fleet.md
            count = resolve_workers(config.site.workers)
            supervisor = None
            if count > 0:
                supervisor = Supervisor(
                    count=count,
                    config_path=path,
                    text=text,
                    fleet=fleet,
                    worker_args=("--log-level", log_spec),
                    drain_grace_s=config.limits.drain_grace_s,
                    nice=config.site.supervisor_nice,
                )
            ports = await nursery.start(
                functools.partial(
                    serve_gateway,
                    config,
                    config_path=path,
                    version=version,
                    fleet=fleet,
                    workers=supervisor,
                )
            )
            draining = False
            async for signum in signals:
                if signum == signal.SIGHUP:
                    if ports.reloader is not None:
                        nursery.start_soon(_reload_on_signal, ports.reloader)
                    continue
                if draining:  # a second SIGTERM/SIGINT: stop now
                    nursery.cancel_scope.cancel()
                    break
                draining = True
                grace = _drain_grace(config, ports)
                nursery.start_soon(_drain_then_stop, nursery.cancel_scope, supervisor, ports, grace)


def _drain_grace(started: Any, ports: Any) -> float:
    """``[limits] drain_grace_s`` of the config running now: a reload may have changed it
    (it applies live, as it does to the listeners a reload drains)."""
    running = started if ports.reloader is None else ports.reloader.gw.config
    grace: float = running.limits.drain_grace_s
    return grace


async def _drain_then_stop(
    scope: trio.CancelScope, supervisor: Supervisor | None, ports: Any, grace_s: float
) -> None:
    """Shutdown: stop accepting callers, let requests in flight finish (up to ``grace_s``;
    a supervisor's workers do it themselves), then stop everything."""
    try:
        if supervisor is not None:
            await supervisor.drain(grace_s)
        elif ports.drain is not None:
            await ports.drain.start_and_wait(grace_s)
    finally:
        scope.cancel()


async def _reload_on_signal(reloader: ConfigReloader) -> None:
    """A SIGHUP reload; the outcome is logged by the reloader, and a bug costs this reload
    only, never the gateway."""
    try:
        await reloader.reload("SIGHUP")
    except Exception:
        logging.getLogger("isthmus.reload").exception("config reload (SIGHUP) failed")
