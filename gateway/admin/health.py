"""``/healthz``: is this gateway fit to serve?  Today: is its own identity usable.

A gateway whose own SVID has expired (or is about to, see :mod:`overlay.identity.expiry`)
cannot link to any peer and cannot serve TLS callers that check it; it must not report ``ok``.
Not ok answers HTTP 503 with a JSON body naming the reason and the expiry time, so a load
balancer or orchestrator takes the gateway out and an operator sees why.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from gateway.admin.server import Reply
from overlay.identity.expiry import own_identity_health
from overlay.identity.rotation import Identity

__all__ = ["healthz_view"]


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def healthz_view(
    site: str, identity: Identity, *, wall_clock: Callable[[], dt.datetime] = _utcnow
) -> Callable[[], Any]:
    """The ``/healthz`` view: ``{"status": "ok", ...}``, or a 503 :class:`Reply` whose body
    has ``status: "not ok"``, ``reason`` and ``identity.not_after``."""

    def healthz() -> Any:
        state = identity.state
        own = own_identity_health(state.svid, wall_clock())
        body: dict[str, Any] = {
            "status": "ok" if own.ok else "not ok",
            "site": site,
            "spiffe_id": str(state.spiffe_id),
            "trust_domains": sorted(str(td) for td in state.bundles),
            "identity": own.as_json(),
        }
        if own.ok:
            return body
        body["reason"] = own.reason
        return Reply(503, body)

    return healthz
