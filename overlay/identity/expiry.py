"""Is this gateway's *own* SVID still usable?  A pure verdict, and a watcher that logs changes.

Why: a gateway whose SVID has expired keeps running, but every peer rejects its certificate --
under TLS 1.3 only after the handshake, so all its own log shows is an unexplained EOF -- and
its health check said ``ok``.  An expired or nearly expired own identity must be visible in
``/healthz`` (not ok) and in the log.

The rule: the SVID is **expiring** when less than ``max(10 % of its lifetime, 5 minutes)`` is
left.  SPIRE (and spiffe-helper) renew at half the lifetime, so with 10 % left renewal has been
failing for a long time; the 5-minute floor gives short-lived SVIDs (minutes) a warning that is
still long enough to act on.  It is **expired** once ``now`` is past its end, and **not yet
valid** before its start.  The lifetime and end are those of the whole chain we present (an
intermediate that expires first ends the SVID's usefulness too).

:func:`own_identity_health` is pure (``now`` is an argument); :func:`watch_own_identity` polls
it and logs once per change of verdict, never per request.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import trio

from overlay.identity.rotation import Identity
from overlay.identity.svid import X509Svid

__all__ = [
    "EXPIRING_FRACTION",
    "EXPIRING_MIN_S",
    "OwnIdentityHealth",
    "own_identity_health",
    "watch_own_identity",
]

log = logging.getLogger("isthmus.identity")

EXPIRING_FRACTION = 0.10
EXPIRING_MIN_S = 300.0

Verdict = Literal["ok", "expiring", "expired", "not_yet_valid"]


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class OwnIdentityHealth:
    """The verdict on our own SVID at one instant."""

    verdict: Verdict
    not_before: dt.datetime
    not_after: dt.datetime
    remaining_s: float

    @property
    def ok(self) -> bool:
        return self.verdict == "ok"

    @property
    def reason(self) -> str | None:
        """Why it is not ok, for ``/healthz`` and the log (``None`` when ok)."""
        end = _iso(self.not_after)
        if self.verdict == "expired":
            return f"own SVID expired at {end}"
        if self.verdict == "expiring":
            return f"own SVID expires at {end} ({self.remaining_s:.0f}s left) and was not renewed"
        if self.verdict == "not_yet_valid":
            return f"own SVID is not valid before {_iso(self.not_before)}"
        return None

    def as_json(self) -> dict[str, Any]:
        return {
            "status": self.verdict,
            "not_before": _iso(self.not_before),
            "not_after": _iso(self.not_after),
            "remaining_s": round(self.remaining_s, 3),
        }


def own_identity_health(
    svid: X509Svid,
    now: dt.datetime,
    *,
    fraction: float = EXPIRING_FRACTION,
    min_remaining_s: float = EXPIRING_MIN_S,
) -> OwnIdentityHealth:
    """The verdict on ``svid`` at ``now`` (see the module docstring for the rule)."""
    start = max(c.not_valid_before_utc for c in svid.chain)
    end = min(c.not_valid_after_utc for c in svid.chain)
    remaining = (end - now).total_seconds()
    lifetime = max(0.0, (end - start).total_seconds())
    verdict: Verdict
    if now < start:
        verdict = "not_yet_valid"
    elif remaining <= 0:
        verdict = "expired"
    elif remaining < max(fraction * lifetime, min_remaining_s):
        verdict = "expiring"
    else:
        verdict = "ok"
    return OwnIdentityHealth(verdict, start, end, remaining)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def watch_own_identity(
    identity: Identity,
    *,
    interval_s: float = 10.0,
    wall_clock: Callable[[], dt.datetime] = _utcnow,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Log our own SVID's verdict whenever it changes (a warning with the expiry time when it
    turns bad, info when a renewal made it good again); checks every ``interval_s``."""
    last: tuple[Verdict, dt.datetime] | None = None
    task_status.started()
    while True:
        health = own_identity_health(identity.state.svid, wall_clock())
        key = (health.verdict, health.not_after)
        if key != last:
            if not health.ok:
                log.warning(
                    "%s: peers will reject this gateway (renew the SVID)",
                    health.reason,
                    extra={"not_after": _iso(health.not_after)},
                )
            elif last is not None:
                log.info("own SVID is valid again, until %s", _iso(health.not_after))
            last = key
        await trio.sleep(interval_s)
