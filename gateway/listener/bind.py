"""Start a listener task and turn a failed bind into a message naming the address.

Why: a bind (``overlay.link.listen.open_listeners``) raises a bare ``OSError`` ("[Errno 98]
Address already in use") that says neither which address nor which listener; with several
listeners, service ports, the east-west listener and the admin API in one config, the
operator cannot tell which line to fix.  Every listener the gateway starts goes through
:func:`start_listener`, which knows both, so the message is written once, here.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Any

import trio

from foundation.errors import ConfigError

_REASONS = {
    errno.EADDRINUSE: "is already in use",
    errno.EADDRNOTAVAIL: "is not an address of this host",
    errno.EACCES: "needs privileges to bind (a port below 1024?)",
}


class ListenerUnusable(ConfigError):
    """A listener's address cannot be bound (in use, not local, no permission)."""


def bind_error(exc: OSError, *, what: str, address: str, port: int) -> ListenerUnusable:
    """The typed error for ``exc`` raised while binding ``what`` on ``address:port``."""
    host = f"[{address}]" if ":" in address else address
    reason = _REASONS.get(exc.errno or 0, f"cannot be bound: {exc.strerror or exc}")
    return ListenerUnusable(f"address {host}:{port} {reason} ({what})")


def _os_error(exc: BaseException) -> OSError | None:
    """The ``OSError`` behind ``exc`` (``nursery.start`` may wrap it in a group)."""
    if isinstance(exc, OSError):
        return exc
    if isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        return _os_error(exc.exceptions[0])
    return None


async def start_listener(
    nursery: trio.Nursery,
    serve: Callable[..., Any],
    *,
    what: str,
    address: str,
    port: int,
) -> Any:
    """``await nursery.start(serve)``; a bind ``OSError`` becomes :class:`ListenerUnusable`.

    Only errors raised before the task reported ``started`` arrive here, i.e. while binding:
    an ``OSError`` later on belongs to a connection and is handled by the listener itself.
    """
    try:
        return await nursery.start(serve)
    except (OSError, BaseExceptionGroup) as exc:
        os_error = _os_error(exc)
        if os_error is None:
            raise
        raise bind_error(os_error, what=what, address=address, port=port) from None
