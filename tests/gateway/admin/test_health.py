"""Own identity health: the verdict rule, ``/healthz`` over a real admin socket (503 with the
reason and expiry time), and the log (one warning per change of verdict, autojump clock)."""

from __future__ import annotations

import datetime as dt
import functools
import http.client
import json
import logging
from typing import Any

import pytest
import trio

from gateway.admin.health import healthz_view
from gateway.admin.server import serve_admin
from overlay.identity.expiry import own_identity_health, watch_own_identity
from tests.overlay.identity.cases import CA_A, TRUSTED
from tests.overlay.identity.certfactory import HOUR, NOW, identity, make_leaf

ID = "spiffe://a.test/gateway/a"
MIN = dt.timedelta(minutes=1)


def svid_identity(lifetime: dt.timedelta, *, started: dt.timedelta = HOUR) -> Any:
    """An identity whose SVID started ``started`` before NOW and lasts ``lifetime``."""
    chain, key = make_leaf(
        CA_A, uris=[ID], not_before=NOW - started, not_after=NOW - started + lifetime
    )
    return identity(chain, key, dict(TRUSTED))


@pytest.mark.parametrize(
    "lifetime, at, verdict",
    [
        (10 * HOUR, NOW, "ok"),
        (10 * HOUR, NOW + 8 * HOUR, "ok"),  # 61 min left of 10 h: more than 10 %
        (10 * HOUR, NOW + 8 * HOUR + 2 * MIN, "expiring"),  # 58 min left: under 10 %
        (10 * HOUR, NOW + 9 * HOUR, "expired"),  # exactly the end
        (10 * HOUR, NOW - 2 * HOUR, "not_yet_valid"),
    ],
)
def test_verdict(lifetime: dt.timedelta, at: dt.datetime, verdict: str) -> None:
    svid = svid_identity(lifetime).state.svid
    assert own_identity_health(svid, at).verdict == verdict


def test_short_lived_svid_gets_the_five_minute_floor() -> None:
    svid = svid_identity(70 * MIN).state.svid  # 10 % is 7 min; ends at NOW + 10 min
    assert own_identity_health(svid, NOW + 2 * MIN).verdict == "ok"  # 8 min left
    assert own_identity_health(svid, NOW + 4 * MIN).verdict == "expiring"  # 6 min < 7 min
    svid = svid_identity(30 * MIN, started=20 * MIN).state.svid  # 10 % is 3 min; floor 5 min
    assert own_identity_health(svid, NOW + 4 * MIN).verdict == "ok"  # 6 min left
    assert own_identity_health(svid, NOW + 6 * MIN).verdict == "expiring"  # 4 min left


def _get(port: int) -> tuple[int, Any]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/healthz")
        response = conn.getresponse()
        return response.status, json.loads(response.read())
    finally:
        conn.close()


async def test_healthz_is_503_with_reason_and_expiry_once_the_own_svid_expired() -> None:
    ident = svid_identity(2 * HOUR)  # ends at NOW + 1 h
    clock = [NOW]
    view = healthz_view("a", ident, wall_clock=lambda: clock[0])
    async with trio.open_nursery() as nursery:
        port = await nursery.start(
            functools.partial(serve_admin, {"/healthz": view}, host="127.0.0.1", port=0)
        )
        ok = await trio.to_thread.run_sync(_get, port)
        clock[0] = NOW + HOUR + MIN
        expired = await trio.to_thread.run_sync(_get, port)
        clock[0] = NOW + 55 * MIN
        expiring = await trio.to_thread.run_sync(_get, port)
        nursery.cancel_scope.cancel()
    end = (NOW + HOUR).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ok[0] == 200 and ok[1]["status"] == "ok" and ok[1]["identity"]["not_after"] == end
    assert expired[0] == 503
    assert expired[1]["status"] == "not ok" and expired[1]["identity"]["status"] == "expired"
    assert expired[1]["reason"] == f"own SVID expired at {end}"
    assert expiring[0] == 503 and expiring[1]["identity"]["status"] == "expiring"
    assert end in expiring[1]["reason"]


async def test_expiry_is_logged_once_per_change_not_per_check(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="isthmus.identity")
    ident = svid_identity(2 * HOUR)  # ends at NOW + 1 h; expiring from NOW + 48 min
    t0 = trio.current_time()

    def wall() -> dt.datetime:
        return NOW + dt.timedelta(seconds=trio.current_time() - t0)

    async with trio.open_nursery() as nursery:
        await nursery.start(
            functools.partial(watch_own_identity, ident, interval_s=10.0, wall_clock=wall)
        )
        await trio.sleep(2 * 3600)  # 720 checks
        nursery.cancel_scope.cancel()
    end = (NOW + HOUR).strftime("%Y-%m-%dT%H:%M:%SZ")
    lines = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0][0] == logging.WARNING and f"own SVID expires at {end}" in lines[0][1]
    assert lines[1][0] == logging.WARNING and f"own SVID expired at {end}" in lines[1][1]
