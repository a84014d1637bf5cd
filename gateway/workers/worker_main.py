"""``isthmus worker``: the entry point of a worker process its supervisor starts.

Not for operators: the supervisor (``isthmus run`` with ``[site] workers``) starts each worker
with the config path, its index and the two socket fds it inherits.  SIGINT and SIGHUP are
ignored here: a Ctrl-C in a terminal reaches the whole process group, and the supervisor
decides how its workers stop (a drain); a reload reaches the workers through the supervisor.
"""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import trio

from foundation.redact import remember_secret
from gateway.config.errors import ConfigInvalid
from gateway.logs import LogSpec, setup_logging
from gateway.reload.apply import load_versioned
from gateway.workers.channel import channel_from_fd
from gateway.workers.worker_app import WorkerExit, handoff_socket, serve_worker


def run_worker(
    config_path: Path, index: int, channel_fd: int, handoff_fd: int, log_spec: LogSpec
) -> int:
    """Run worker ``index`` until its supervisor drains it or goes; the exit status."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:  # for the log lines' site name; what runs comes from the supervisor
        config, _version = load_versioned(config_path)
    except ConfigInvalid as exc:
        print(exc.report(), file=sys.stderr)
        return 2
    setup_logging(log_spec, site=config.site.name, worker=index)
    for source in config.sources:  # the Consul ACL token never reaches a log line
        remember_secret(getattr(source, "token", None))
    from overlay.link.listen import set_reuse_port

    set_reuse_port(True)  # every worker binds the same ports; the kernel spreads connections

    async def main() -> None:
        channel = channel_from_fd(channel_fd)
        handoff = handoff_socket(handoff_fd)
        try:
            await serve_worker(
                config_path=config_path, index=index, channel=channel, handoff=handoff
            )
        finally:
            handoff.close()

    try:
        trio.run(main)
    except WorkerExit as exc:
        logging.getLogger("isthmus.workers").warning("worker %d exits: %s", index, exc)
        return 1
    return 0
